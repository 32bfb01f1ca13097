"""torchaudio ``Wav2Vec2Model`` (wav2vec2 / HuBERT / WavLM) as a frozen teacher.

Accepts a model object, a ``torchaudio.models`` factory name (random weights, for tests and
benchmarks; no network), or a fairseq checkpoint converted with
``torchaudio.models.wav2vec2.utils.import_fairseq_model``. Hidden states line up index by
index with :class:`~kd_core.teachers.fairseq_teacher.FairseqTeacher` on the same checkpoint.
"""
from __future__ import annotations

import os
from typing import List, Optional

import torch
from torch import nn

from ..errors import require
from .base import Teacher, TeacherOutput, normalize_waveform
from .masked_norm import padding_aware_group_norm

FACTORY_PREFIXES = ("wav2vec2_", "hubert_", "wavlm_")


class TorchaudioTeacher(Teacher):
    """Frozen ``torchaudio.models.Wav2Vec2Model``.

    ``hidden[1:]`` are ``model.extract_features(wav, lengths)`` (each transformer layer's
    output); ``hidden[0]`` is the input of ``encoder.transformer.layers[0]`` (projected CNN
    features + positional conv, layer-normed in post-LN models), the same tensor fairseq feeds
    its first layer. ``logits`` are ``model.aux`` applied to the final encoder output.

    Args:
        model: ``torchaudio.models.Wav2Vec2Model``.
        normalize_waveform: zero-mean/unit-variance per utterance over its valid samples (for
            models pre-trained with fairseq's ``task.normalize=True``, e.g. wav2vec2 Large).
        aux_is_ctc: ``model.aux`` (if any) is a CTC head whose output is the ``logits``;
            ``False`` leaves ``logits`` ``None``.
        sample_rate: expected input rate in Hz.
    """

    def __init__(self, model: nn.Module, normalize_waveform: bool = False, aux_is_ctc: bool = True, sample_rate: int = 16000):
        super().__init__()
        self.model = model
        self.normalize, self.sample_rate = bool(normalize_waveform), int(sample_rate)
        transformer = model.encoder.transformer
        transformer.layer_drop = 0.0
        self.use_aux = aux_is_ctc and model.aux is not None
        self.num_layers = len(transformer.layers)
        self.hidden_size = transformer.layer_norm.normalized_shape[0]
        self.vocab_size = model.aux.out_features if self.use_aux else None
        self.convs = [(b.conv.kernel_size[0], b.conv.stride[0]) for b in model.feature_extractor.conv_layers]
        stride = 1
        for _, s in self.convs:
            stride *= s
        self.frame_shift_ms = 1000.0 * stride / self.sample_rate
        # "group_norm" extractor (GroupNorm over time in components.py ConvLayerBlock): batched with statistics
        # over each utterance's valid frames (masked_norm)
        self.padding_sensitive = False
        self.freeze()

    def conv_blocks(self) -> List[nn.Module]:
        return list(self.model.feature_extractor.conv_layers)

    def prediction_layer(self) -> Optional[nn.Linear]:
        return self.model.aux if self.use_aux else None

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """``(B,)`` samples -> ``(B,)`` frames: ``(L - k) // s + 1`` per conv layer (components.py)."""
        for k, s in self.convs:
            lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
        return lengths

    def _forward_batch(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherOutput:
        """``wav (B, S)``, ``lengths (B,)`` -> hidden ``num_layers + 1 x (B, T, D)``, logits ``(B, T, V)``."""
        self.checked_frames(lengths)  # one line for an utterance shorter than the receptive field
        if self.normalize:
            wav = normalize_waveform(wav, lengths)
        transformer = self.model.encoder.transformer
        got = {}

        def grab_input(module, args):  # must return None, or the hook would replace the layer's arguments
            got["in"] = args[0]

        hook = transformer.layers[0].register_forward_pre_hook(grab_input)
        try:
            with padding_aware_group_norm(self.conv_blocks(), lengths):
                layers, out_len = self.model.extract_features(wav, lengths)
        finally:
            hook.remove()
        logits = None
        if self.use_aux:  # Transformer.forward's tail: final LayerNorm only in pre-LN models
            last = layers[-1] if transformer.layer_norm_first else transformer.layer_norm(layers[-1])
            logits = self.model.aux(last)
        return TeacherOutput(hidden=[got["in"]] + list(layers), lengths=out_len, logits=logits, frame_shift_ms=self.frame_shift_ms)


def load_torchaudio_teacher(factory_or_path: str, normalize_waveform: Optional[bool] = None, aux_is_ctc: bool = True,
                            data_dir: Optional[str] = None, **factory_kwargs) -> TorchaudioTeacher:
    """Build a :class:`TorchaudioTeacher`.

    Args:
        factory_or_path: a ``torchaudio.models`` factory name such as ``"wav2vec2_base"`` or
            ``"hubert_base"`` (random weights), or a fairseq ``.pt`` checkpoint, loaded with
            :func:`~kd_core.teachers.fairseq_teacher.load_fairseq_teacher` and converted with
            ``import_fairseq_model``.
        normalize_waveform: default: the checkpoint's ``task.normalize`` (factories: ``False``).
        data_dir: forwarded to the fairseq loader.
        **factory_kwargs: e.g. ``aux_num_out`` for factories.
    """
    import torchaudio

    source = str(factory_or_path)
    if os.path.exists(source) or source.endswith(".pt") or os.path.sep in source:
        require(os.path.isfile(source), f"teacher_path={source}: file not found; pass an existing fairseq checkpoint (.pt) "
                "or a torchaudio factory name such as hubert_base")
        from torchaudio.models.wav2vec2.utils import import_fairseq_model

        from .fairseq_teacher import load_fairseq_teacher

        fs = load_fairseq_teacher(source, data_dir=data_dir)
        # CTC models: import the encoder (w2v_model + proj -> aux); import_fairseq.py dispatches on the class name
        model = import_fairseq_model(getattr(fs.model, "w2v_encoder", fs.model)).eval()
        norm = fs.normalize if normalize_waveform is None else normalize_waveform
        return TorchaudioTeacher(model, normalize_waveform=norm, aux_is_ctc=aux_is_ctc, sample_rate=fs.sample_rate)
    factory = getattr(torchaudio.models, source, None)
    require(callable(factory) and source.startswith(FACTORY_PREFIXES),
            f"teacher_path={source!r}: not a torchaudio wav2vec2/hubert/wavlm factory nor an existing checkpoint; "
            "use e.g. 'hubert_base' or /path/to/model.pt")
    model = factory(**factory_kwargs)
    require(isinstance(model, torchaudio.models.Wav2Vec2Model),
            f"teacher_path={source!r}: builds a {type(model).__name__}, not a Wav2Vec2Model; use e.g. 'hubert_base'")
    return TorchaudioTeacher(model.eval(), normalize_waveform=bool(normalize_waveform), aux_is_ctc=aux_is_ctc)
