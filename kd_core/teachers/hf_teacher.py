"""Hugging Face ``transformers`` wav2vec 2.0 / HuBERT / WavLM checkpoints (with or without a CTC head)
as frozen teachers, loaded by ``transformers``' own classes from a local folder or the local cache.

Never a download: ``from_pretrained(..., local_files_only=True)``, and weights only from
``model.safetensors`` (read without unpickling). Layer indexing is the other loaders': ``hidden[0]`` is
the input of the first transformer layer (``hidden_states[0]`` of ``output_hidden_states``), ``hidden[i]``
the output of layer ``i`` (read with forward hooks, so for pre-LN "stable layer norm" models the last entry
is the last layer's output before the encoder's final layer norm, as fairseq's ``layer_results``; the CTC
logits read the normalised output, as ``*ForCTC`` does). Batches run with an attention mask (padded frames
are zeroed before the positional convolution and masked in attention); a waveform CNN that normalises over
time (``feat_extract_norm="group"``: the Base models) takes its statistics over each utterance's valid
frames (:mod:`~kd_core.teachers.masked_norm`).
"""
from __future__ import annotations

import json
import os
from typing import List, Optional

import torch
from torch import nn

from ..errors import KDConfigError, require
from ..hooks import capture_layers
from .base import Teacher, TeacherOutput, normalize_waveform
from .masked_norm import padding_aware_group_norm

#: ``config.json`` ``model_type`` -> (base class, CTC class) names in ``transformers``
HF_ARCHITECTURES = {"wav2vec2": ("Wav2Vec2Model", "Wav2Vec2ForCTC"), "hubert": ("HubertModel", "HubertForCTC"),
                    "wavlm": ("WavLMModel", "WavLMForCTC")}


def _resolve(path: str, option: str) -> str:
    """A local folder, or the snapshot folder of a name already in the local Hugging Face cache."""
    if os.path.isdir(path):
        require(os.path.isfile(os.path.join(path, "config.json")),
                f"{option}={path}: no config.json in this folder; pass a folder written by transformers' save_pretrained")
        return path
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not available offline"
        raise KDConfigError(f"{option}={path}: not a folder and not in the local Hugging Face cache; download it beforehand "
                            "(no network is used at run time) or pass the folder") from None


class HFTeacher(Teacher):
    """Frozen ``transformers`` speech encoder (optionally ``*ForCTC``).

    Args:
        model: a ``Wav2Vec2Model``/``HubertModel``/``WavLMModel`` or their ``*ForCTC``.
        normalize: zero-mean unit-variance input per utterance (the feature extractor's ``do_normalize``).
    """

    def __init__(self, model: nn.Module, normalize: bool = False, sample_rate: int = 16000):
        super().__init__()
        self.model = model
        self.base = getattr(model, model.base_model_prefix, model) if hasattr(model, "lm_head") else model
        self.head = getattr(model, "lm_head", None)
        cfg = self.base.config
        self.normalize, self.sample_rate = bool(normalize), int(sample_rate)
        self.num_layers = cfg.num_hidden_layers
        self.hidden_size = cfg.hidden_size
        self.vocab_size = None if self.head is None else self.head.out_features
        stride = 1
        for s in cfg.conv_stride:
            stride *= s
        self.frame_shift_ms = 1000.0 * stride / self.sample_rate
        self.padding_sensitive = False  # group-norm CNNs: statistics over valid frames (masked_norm)
        self.freeze()

    def conv_blocks(self) -> List[nn.Module]:
        return list(self.base.feature_extractor.conv_layers)

    def prediction_layer(self) -> Optional[nn.Linear]:
        return self.head

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.base._get_feat_extract_output_lengths(lengths).long()

    def _forward_batch(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherOutput:
        frames = self.checked_frames(lengths)
        if self.normalize:
            wav = normalize_waveform(wav, lengths)
        mask = None
        if wav.size(0) > 1 or int(lengths[0]) < wav.size(1):
            mask = (torch.arange(wav.size(1), device=wav.device)[None, :] < lengths[:, None]).long()
        with capture_layers(self.base.encoder.layers) as got, padding_aware_group_norm(self.conv_blocks(), lengths):
            out = self.base(wav, attention_mask=mask)
        hidden = got[: self.num_layers + 1]
        t = hidden[-1].size(1)
        logits = self.head(out.last_hidden_state) if self.head is not None else None
        return TeacherOutput(hidden=hidden, lengths=frames.clamp(max=t), logits=logits, frame_shift_ms=self.frame_shift_ms)


def load_hf_teacher(path: str, option: str = "teacher_path") -> HFTeacher:
    """Load a ``transformers`` wav2vec2 / HuBERT / WavLM checkpoint (base or ``*ForCTC``) as a teacher.

    ``path``: a folder with ``config.json`` + ``model.safetensors`` (``save_pretrained``), or a model name
    already in the local Hugging Face cache. ``preprocessor_config.json``'s ``do_normalize`` is honoured.
    """
    import transformers

    folder = _resolve(path, option)
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    kind = cfg.get("model_type")
    require(kind in HF_ARCHITECTURES, f"{option}={path}: model_type {kind!r} is not supported; "
            f"supported: {', '.join(HF_ARCHITECTURES)} (with or without a CTC head)")
    require(os.path.isfile(os.path.join(folder, "model.safetensors")),
            f"{option}={path}: no model.safetensors; re-save it with save_pretrained(safe_serialization=True) "
            "(pickled .bin weights are not read)")
    ctc = any(a.endswith("ForCTC") for a in cfg.get("architectures") or [])
    cls = getattr(transformers, HF_ARCHITECTURES[kind][1 if ctc else 0])
    try:
        model = cls.from_pretrained(folder, local_files_only=True, use_safetensors=True, layerdrop=0.0)
    except Exception as e:  # noqa: BLE001 - one line naming the folder
        msg = str(e).splitlines()[0][:160] if str(e) else ""
        raise KDConfigError(f"{option}={path}: transformers cannot load it ({type(e).__name__}: {msg})") from None
    normalize = False
    pre = os.path.join(folder, "preprocessor_config.json")
    if os.path.isfile(pre):
        with open(pre, encoding="utf-8") as f:
            normalize = bool(json.load(f).get("do_normalize", False))
    return HFTeacher(model.eval(), normalize=normalize, sample_rate=int(cfg.get("sampling_rate", 16000)))
