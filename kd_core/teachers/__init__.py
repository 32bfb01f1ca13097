"""Frozen teachers behind one interface; toolkit imports happen inside each loader."""
from __future__ import annotations

import torch

from ..errors import require
from .base import Teacher, TeacherOutput

TEACHER_TYPES = ("fairseq", "torchaudio", "espnet", "huggingface")


def load_teacher(teacher_type: str, teacher_path: str, compute_dtype: str = "float32", **kwargs) -> Teacher:
    """Load a frozen teacher.

    Args:
        teacher_type: ``"fairseq"`` (wav2vec2/HuBERT/wav2vec-CTC ``.pt``), ``"torchaudio"``
            (factory name such as ``"hubert_base"`` or a fairseq ``.pt`` imported with
            ``import_fairseq_model``), ``"espnet"`` (packed zip or espnet_model_zoo name) or ``"huggingface"``
            (a ``transformers`` wav2vec2/HuBERT/WavLM folder or a name in the local Hugging Face cache).
        teacher_path: path or name, as above.
        compute_dtype: what the teacher computes in (:meth:`Teacher.set_compute_dtype`: ``float32``, ``bfloat16``,
            ``float16``); targets are float32 either way. ESPnet: ``--teacher_conf compute_dtype=bfloat16``; fairseq:
            ``model.teacher_dtype=bfloat16``. Part of a target cache's identity.
        **kwargs: loader options (``data_dir`` for fairseq and torchaudio checkpoints,
            ``cachedir`` for espnet, ``normalize_waveform`` / ``aux_is_ctc`` for torchaudio).

    Raises:
        KDConfigError: unknown ``teacher_type``; missing, corrupt or unsupported file (the
            one-line message names ``teacher_path``). Every teacher exposes ``sample_rate``
            for the caller's check.
    """
    require(teacher_type in TEACHER_TYPES, f"teacher_type={teacher_type!r}: unknown; choose one of {', '.join(TEACHER_TYPES)}")
    # toolkits initialise a model's weights randomly before loading the checkpoint into it: a forked RNG
    # keeps the caller's random stream (the student's initialisation, data order) independent of the teacher
    with torch.random.fork_rng(devices=[]):
        return _load(teacher_type, teacher_path, **kwargs).set_compute_dtype(compute_dtype, "teacher compute_dtype")


def _load(teacher_type: str, teacher_path: str, **kwargs) -> Teacher:
    if teacher_type == "fairseq":
        from .fairseq_teacher import load_fairseq_teacher

        return load_fairseq_teacher(teacher_path, **kwargs)
    if teacher_type == "torchaudio":
        from .torchaudio_teacher import load_torchaudio_teacher

        return load_torchaudio_teacher(teacher_path, **kwargs)
    if teacher_type == "huggingface":
        from .hf_teacher import load_hf_teacher

        return load_hf_teacher(teacher_path, **kwargs)
    from .espnet_teacher import load_espnet_teacher

    return load_espnet_teacher(teacher_path, **kwargs)


__all__ = ["Teacher", "TeacherOutput", "TEACHER_TYPES", "load_teacher"]
