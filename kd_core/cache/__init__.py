"""Teacher-target cache: a teacher's selected layers (and logits) for a data set, computed once.

Targets are stored sharded and memory-mappable (float16 or float32) under
``<root>/<identity>/``, where the identity hashes the teacher checkpoint's bytes, the layer
selection, the dtype and whether logits are stored; utterances are keyed by a hash of their
samples, so ESPnet and fairseq read the same cache and changed audio is never served stale.
A build killed halfway is reported incomplete and resumes where it stopped.

- :class:`TeacherTargetCache`: ``lookup(wav, lengths)`` / ``add(wav, lengths, out)``;
- :class:`CachedTeacher`: a drop-in :class:`~kd_core.teachers.base.Teacher` (``mode="fill"``
  computes what is missing, ``mode="read"`` requires a built cache); :func:`load_cached_teacher`;
- ``python -m kd_core.cache build|status`` (:func:`~.cli.main`; library: :func:`build_cache`).
"""
from ..data import read_wav_list
from .build import build_cache, find_caches
from .cli import main
from .keys import describe_teacher, parse_layers, teacher_fingerprint, utterance_keys, weights_hash
from .store import TeacherTargetCache
from .teacher import CachedTeacher, cached_teacher_for_loss, load_cached_teacher

__all__ = ["TeacherTargetCache", "CachedTeacher", "cached_teacher_for_loss", "load_cached_teacher", "teacher_fingerprint", "describe_teacher",
           "utterance_keys", "weights_hash", "parse_layers", "build_cache", "read_wav_list", "find_caches", "main"]
