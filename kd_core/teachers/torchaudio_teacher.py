"""torchaudio ``Wav2Vec2Model`` (wav2vec2 / HuBERT / WavLM) as a frozen teacher.

Accepts a model object, a torchaudio factory name (random weights, e.g. for benchmarks), or a
fairseq checkpoint converted with ``torchaudio.models.wav2vec2.utils.import_fairseq_model``.
Hidden-state indexing matches :class:`~kd_core.teachers.fairseq_teacher.FairseqTeacher`.
"""
from __future__ import annotations

import os
from typing import List, Optional

import torch
from torch import nn

from ..errors import require
from .base import Teacher, TeacherOutput, normalize_waveform


class TorchaudioTeacher(Teacher):
    """Frozen torchaudio ``Wav2Vec2Model``.

    Args:
        model: ``torchaudio.models.Wav2Vec2Model``; its ``aux`` head (if any) gives ``logits``.
        normalize_waveform: zero-mean/unit-variance per utterance over valid samples (for
            models pre-trained with fairseq's ``normalize=True``, e.g. wav2vec2 Large).
    """

    def __init__(self, model: nn.Module, normalize_waveform: bool = False, sample_rate: int = 16000):
        super().__init__()
        self.model = model
        self.normalize, self.sample_rate = normalize_waveform, sample_rate
        transformer = model.encoder.transformer
        transformer.layer_drop = 0.0
        self.num_layers = len(transformer.layers)
        self.hidden_size = transformer.layers[0].attention.embed_dim
        self.vocab_size = None if model.aux is None else model.aux.out_features
        stride = 1
        for block in model.feature_extractor.conv_layers:
            stride *= block.conv.stride[0]
        self.frame_shift_ms = 1000.0 * stride / sample_rate
        self.padding_sensitive = any(isinstance(b.layer_norm, nn.GroupNorm) for b in model.feature_extractor.conv_layers)
        self.freeze()

    def _forward_batch(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherOutput:
        if self.normalize:
            wav = normalize_waveform(wav, lengths)
        layers = self.model.encoder.transformer.layers
        captured: List[torch.Tensor] = []
        hooks = [layers[0].register_forward_pre_hook(lambda m, a: captured.append(a[0]))]
        hooks += [layer.register_forward_hook(lambda m, a, out: captured.append(out[0])) for layer in layers]
        try:
            out, out_len = self.model(wav, lengths)
        finally:
            for h in hooks:
                h.remove()
        logits = out if self.model.aux is not None else None
        return TeacherOutput(hidden=captured, lengths=out_len, logits=logits, frame_shift_ms=self.frame_shift_ms)


def load_torchaudio_teacher(source: str, normalize_waveform: Optional[bool] = None, **factory_kwargs) -> TorchaudioTeacher:
    """``source``: a ``torchaudio.models`` factory name (``"hubert_base"``, random weights) or a
    fairseq checkpoint path imported with ``import_fairseq_model``."""
    import torchaudio

    if os.path.sep in source or source.endswith(".pt"):
        from torchaudio.models.wav2vec2.utils import import_fairseq_model

        from .fairseq_teacher import load_fairseq_teacher

        fs = load_fairseq_teacher(source)
        model = import_fairseq_model(getattr(fs.model, "w2v_encoder", fs.model))  # CTC: import the encoder + proj
        norm = fs.normalize if normalize_waveform is None else normalize_waveform
        return TorchaudioTeacher(model, normalize_waveform=norm, sample_rate=fs.sample_rate)
    factory = getattr(torchaudio.models, source, None)
    require(callable(factory) and source.startswith(("wav2vec2", "hubert", "wavlm")),
            f"teacher_path={source!r}: not a torchaudio wav2vec2/hubert/wavlm factory nor a checkpoint path; "
            "use e.g. 'hubert_base' or /path/to/model.pt")
    return TorchaudioTeacher(factory(**factory_kwargs), normalize_waveform=bool(normalize_waveform))
