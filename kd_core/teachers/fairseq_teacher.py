"""fairseq wav2vec 2.0 / HuBERT / wav2vec-CTC checkpoints as frozen teachers.

Loads with fairseq's own ``checkpoint_utils`` + task/model registries. Checkpoints whose task
data directory is absent here (every official one) load through a temporary directory with
placeholder dictionaries sized from the checkpoint's weights; only their *sizes* matter.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
from typing import List, Optional

import torch
from torch import nn

from ..errors import KDConfigError, require
from .base import Teacher, TeacherOutput, normalize_waveform

logger = logging.getLogger(__name__)


def read_fairseq_checkpoint(path: str):
    """``checkpoint_utils.load_checkpoint_to_cpu`` allowing the ``argparse.Namespace`` of official checkpoints."""
    from fairseq import checkpoint_utils

    require(os.path.isfile(path), f"teacher_path={path}: file not found; pass an existing fairseq checkpoint (.pt)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = checkpoint_utils.load_checkpoint_to_cpu(path)
    except Exception as e:
        raise KDConfigError(f"teacher_path={path}: not a readable fairseq checkpoint ({type(e).__name__}); "
                            "re-download it or pass the right file") from None
    require(state.get("cfg") is not None and "model" in state, f"teacher_path={path}: no 'cfg'/'model' in the checkpoint; not a fairseq model")
    return state


def _placeholder_data_dir(cfg, weights, tmp: str) -> None:
    """Write ``dict.<label>.txt`` files the task needs, sized from the checkpoint weights."""
    from omegaconf import open_dict

    n_special = 4  # <s> <pad> </s> <unk>
    with open_dict(cfg):
        cfg.task.data = tmp
        if "label_dir" in cfg.task:
            cfg.task.label_dir = tmp
    labels = cfg.task.get("labels")
    if labels is None:
        return
    labels = [labels] if isinstance(labels, str) else list(labels)
    if "label_embs_concat" in weights:  # HuBERT pre-training: one table for all label sets
        sizes = [weights["label_embs_concat"].size(0) // len(labels)] * len(labels)
    elif "w2v_encoder.proj.weight" in weights:  # CTC fine-tuned: output size == len(dictionary)
        sizes = [weights["w2v_encoder.proj.weight"].size(0)]
    else:
        sizes = [n_special + 1] * len(labels)
    for label, size in zip(labels, sizes):
        with open(os.path.join(tmp, f"dict.{label}.txt"), "w") as f:
            f.writelines(f"sym{i} 1\n" for i in range(size - n_special))


def build_fairseq_model(path: str, data_dir: Optional[str] = None):
    """Build the checkpoint's model with fairseq's task registry and load its weights (strict).

    Returns ``(model, cfg)``.
    """
    from fairseq import tasks
    from omegaconf import open_dict

    state = read_fairseq_checkpoint(path)
    cfg, weights = state["cfg"], state["model"]
    data = data_dir or cfg.task.get("data")
    label_dir = cfg.task.get("label_dir") or data
    with tempfile.TemporaryDirectory() as tmp:
        if data_dir is not None:
            with open_dict(cfg):
                cfg.task.data = data_dir
                if "label_dir" in cfg.task:
                    cfg.task.label_dir = data_dir
        elif not (data and os.path.isdir(data) and os.path.isdir(label_dir)):
            logger.info("task data dir %s not found; using placeholder dictionaries", data)
            _placeholder_data_dir(cfg, weights, tmp)
        if cfg.model.get("w2v_args") is not None:
            with open_dict(cfg):
                cfg.model.w2v_args.task.data = cfg.task.data
        task = tasks.setup_task(cfg.task, from_checkpoint=True)
        model = task.build_model(cfg.model, from_checkpoint=True)
    model.load_state_dict(weights, strict=True, model_cfg=cfg.model)
    return model, cfg


class FairseqTeacher(Teacher):
    """Frozen fairseq wav2vec2/HuBERT (optionally CTC fine-tuned) teacher.

    ``hidden[0]`` is the input of the first transformer layer (features + positional conv),
    ``hidden[i]`` the output of transformer layer ``i``; ``logits`` come from the CTC
    projection of fine-tuned models. Frame shift: the CNN's total stride (20 ms).
    """

    def __init__(self, model: nn.Module, normalize: bool = False, sample_rate: int = 16000):
        super().__init__()
        self.model = model
        self.w2v = model.w2v_encoder.w2v_model if hasattr(model, "w2v_encoder") else model
        self.proj = getattr(getattr(model, "w2v_encoder", None), "proj", None)
        self.w2v.encoder.layerdrop = 0.0
        self.normalize, self.sample_rate = normalize, sample_rate
        self.num_layers = len(self.w2v.encoder.layers)
        self.hidden_size = self.w2v.encoder.embedding_dim
        self.vocab_size = None if self.proj is None else self.proj.out_features
        stride = 1
        for conv in self.w2v.feature_extractor.conv_layers:
            stride *= conv[0].stride[0]
        self.frame_shift_ms = 1000.0 * stride / sample_rate
        # extractor_mode="default": GroupNorm over time in the first conv block -> padding-sensitive
        self.padding_sensitive = any(isinstance(m, nn.GroupNorm) for m in self.w2v.feature_extractor.conv_layers[0])
        self.freeze()

    def _forward_batch(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherOutput:
        valid = torch.arange(wav.size(1))[None, :] < lengths[:, None]
        if self.normalize:
            wav = normalize_waveform(wav, lengths)
        captured: List[torch.Tensor] = []
        hooks = [self.w2v.encoder.layers[0].register_forward_pre_hook(lambda m, a, kw: captured.append(a[0]), with_kwargs=True)]
        hooks += [layer.register_forward_hook(lambda m, a, out: captured.append(out[0])) for layer in self.w2v.encoder.layers]
        try:
            res = self.w2v(wav, padding_mask=~valid, mask=False, features_only=True)
        finally:
            for h in hooks:
                h.remove()
        t = res["x"].size(1)
        hidden = [h.transpose(0, 1)[:, :t] for h in captured]  # T x B x C -> B x T x C, drop seq-multiple padding
        pad = res["padding_mask"]
        out_len = torch.full((wav.size(0),), t, dtype=torch.long) if pad is None else (~pad).sum(1)
        logits = self.proj(res["x"]) if self.proj is not None else None
        return TeacherOutput(hidden=hidden, lengths=out_len, logits=logits, frame_shift_ms=self.frame_shift_ms)


def load_fairseq_teacher(path: str, data_dir: Optional[str] = None) -> FairseqTeacher:
    """Load a fairseq ``wav2vec2``/``hubert``/``wav2vec_ctc`` checkpoint as a frozen :class:`FairseqTeacher`."""
    model, cfg = build_fairseq_model(path, data_dir)
    inner = model.w2v_encoder.w2v_model if hasattr(model, "w2v_encoder") else model
    require(hasattr(inner, "feature_extractor") and hasattr(inner, "encoder"),
            f"teacher_path={path}: model {type(inner).__name__} is not a wav2vec2/HuBERT model; use teacher_type=espnet or torchaudio")
    normalize = bool(cfg.task.get("normalize", False))
    return FairseqTeacher(model, normalize=normalize, sample_rate=int(cfg.task.get("sample_rate", 16000)))
