"""A :class:`~kd_core.teachers.base.Teacher` that answers from a :class:`TeacherTargetCache`.

Adapters swap their teacher for a :class:`CachedTeacher`; nothing else changes: same
attributes, same ``forward(wav, lengths) -> TeacherOutput``.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Sequence, Union

import torch

from ..errors import KDConfigError, require
from ..teachers.base import Teacher, TeacherOutput
from .keys import describe_teacher, parse_layers, teacher_fingerprint, utterance_keys
from .store import TeacherTargetCache

logger = logging.getLogger(__name__)
MODES = ("fill", "read")


class CachedTeacher(Teacher):
    """Teacher targets from a cache; the wrapped teacher runs only on utterances not cached yet.

    ``forward`` returns float32 targets on ``wav.device``: ``hidden`` has ``num_layers + 1``
    entries, ``(B, T, D)`` at the cached layers and ``None`` at the others; ``logits (B, T, V)``
    if the cache stores them. Freshly computed targets go through the cache too, so with
    ``dtype="float16"`` an utterance gets the same (rounded) targets in every epoch, cached or not.
    Padded frames are zero.

    Args:
        cache: where targets are read and stored.
        teacher: the real teacher (needed in ``"fill"`` mode; in ``"read"`` mode optional, the
            shape attributes then come from the cache's ``meta.json``).
        mode: ``"fill"``: compute and store missing utterances; ``"read"``: a missing utterance is
            a :class:`KDConfigError` (the cache must have been built beforehand).
    """

    padding_sensitive = False

    def __init__(self, cache: TeacherTargetCache, teacher: Optional[Teacher] = None, mode: str = "fill"):
        super().__init__()
        require(mode in MODES, f"mode={mode!r}: choose 'fill' (compute missing targets) or 'read' (cache only)")
        require(mode == "read" or teacher is not None, "mode='fill' needs the teacher to compute missing targets; "
                "pass teacher=... or use mode='read' with a built cache")
        self.cache, self.mode, self.teacher = cache, mode, teacher
        if teacher is not None:
            cache.set_teacher_info(describe_teacher(teacher))
        require(cache.teacher_info is not None, f"teacher cache {cache.path}: empty; build it with 'python -m kd_core.cache "
                "build ...' or use mode='fill' with the teacher")
        info = cache.teacher_info
        self.num_layers, self.hidden_size = int(info["num_layers"]), int(info["hidden_size"])
        self.vocab_size = int(info["vocab_size"]) if cache.store_logits else None
        self.frame_shift_ms = float(info["frame_shift_ms"])
        self.sample_rate = int(teacher.sample_rate if teacher is not None else info.get("sample_rate") or 16000)
        self.hits = self.misses = 0
        if mode == "read" and not cache.complete:
            logger.warning("teacher cache %s: no complete build (%d/%s utterances cached); an utterance that is not cached "
                           "will stop training", cache.path, len(cache), cache.expected if cache.expected is not None else "?")
        self.freeze()

    @torch.no_grad()
    def codebook(self, option: str = "codebook_teacher_path"):
        """The HuBERT codebook of the model behind the cache (the targets still come from the cache)."""
        require(self.teacher is not None, f"{option}: kd_loss hubert_disc reads the teacher model's codebook; a cache in "
                "read mode has no model: use fill mode (or the online teacher)")
        return self.teacher.codebook(option)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherOutput:
        """``wav (B, S)`` zero-padded, ``lengths (B,)`` valid samples -> :class:`TeacherOutput` (see class doc)."""
        require(wav.dim() == 2, f"teacher input: expected (B, samples) waveforms, got shape {tuple(wav.shape)}")
        require(bool((lengths > 0).all()), "teacher input: empty audio (0 samples) in batch; drop empty utterances from the data")
        keys = utterance_keys(wav, lengths)
        missing = self.cache.missing(keys)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            if self.mode == "read":
                raise KDConfigError(f"teacher cache {self.cache.path}: {len(missing)} of {len(keys)} utterances of this batch "
                                    f"are not cached (first: {int(lengths[missing[0]])} samples); build the cache over this "
                                    "data with 'python -m kd_core.cache build ...' (same teacher, layers, dtype and audio) "
                                    "or use mode='fill'")
            idx = torch.tensor(missing, device=wav.device)
            sub_len = lengths[idx]
            self.cache.add_output([keys[i] for i in missing], self.teacher(wav[idx, : int(sub_len.max())], sub_len))
        return self.cache.fetch(keys, wav.device)


def load_cached_teacher(cache_root: Union[str, os.PathLike], teacher_type: str, teacher_path: str,
                        layers: Union[str, Sequence[int]], mode: str = "fill", dtype: str = "float16",
                        store_logits: Optional[bool] = None, teacher: Optional[Teacher] = None,
                        **teacher_conf) -> CachedTeacher:
    """The cache of ``teacher_path``'s ``layers`` under ``cache_root``, as a teacher.

    In ``"fill"`` mode the teacher is loaded (``load_teacher(teacher_type, teacher_path,
    **teacher_conf)``, unless ``teacher`` is given); in ``"read"`` mode only the checkpoint is
    hashed, so neither the toolkit nor the model is loaded (except for torchaudio factory names,
    whose random weights must be hashed). ``store_logits=None``: logits iff the teacher has a
    CTC head (``"fill"``), or whichever cache exists, preferring the one with logits (``"read"``).
    """
    require(mode in MODES, f"mode={mode!r}: choose 'fill' (compute missing targets) or 'read' (cache only)")
    if teacher is None and (mode == "fill" or (teacher_type == "torchaudio" and not os.path.isfile(str(teacher_path)))):
        from ..teachers import load_teacher

        teacher = load_teacher(teacher_type, str(teacher_path), **teacher_conf)
    fingerprint = teacher_fingerprint(teacher_type, teacher_path, teacher=teacher, **teacher_conf)
    if store_logits is None:
        if teacher is not None:
            store_logits = teacher.vocab_size is not None
        else:
            found = [s for s in (True, False) if TeacherTargetCache(cache_root, fingerprint, layers, dtype, s).teacher_info]
            store_logits = found[0] if found else False
    info = describe_teacher(teacher) if teacher is not None else None
    cache = TeacherTargetCache(cache_root, fingerprint, parse_layers(layers), dtype, store_logits, teacher_info=info)
    return CachedTeacher(cache, teacher, mode)


def cached_teacher_for_loss(loss, teacher: Teacher, teacher_type: str, teacher_path: str, cache_dir: str,
                            mode: str = "fill", dtype: str = "float16", **teacher_conf) -> CachedTeacher:
    """What both adapters call after building their KD loss: ``teacher`` behind a cache of exactly the
    teacher layers ``loss`` reads (and the logits if it needs them)."""
    from ..losses.registry import needs_logits, teacher_layers_used

    layers = teacher_layers_used(loss) or [teacher.num_layers]  # e.g. LF-MMI with alpha=1 reads logits only
    cached = load_cached_teacher(cache_dir, teacher_type, teacher_path, layers, mode=mode, dtype=dtype,
                                 store_logits=needs_logits(loss), teacher=teacher, **teacher_conf)
    logger.info("teacher targets from cache %s (%s, layers %s%s)", cached.cache.path, mode, ",".join(map(str, layers)),
                " + logits" if needs_logits(loss) else "")
    return cached
