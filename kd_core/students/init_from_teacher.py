"""Initialise a student's waveform CNN and CTC head from a teacher (DistillW2V2 stage 1, optional).

Copies, where the shapes agree: each teacher CNN block's ``Conv1d`` weight into the student's
:class:`~kd_core.students.frontends.WaveformCNN` conv of the same index, its ``LayerNorm`` (wav2vec2
``layer_norm`` extractor mode) into the student's per-frame norm, and the teacher's CTC output
layer into the student's CTC head (same width and token list). Group norms (HuBERT / wav2vec2
Base ``default`` mode) normalise over time and are never copied: the student keeps its LayerNorm.
"""
from __future__ import annotations

import logging
from typing import List, Optional

import torch
from torch import nn

from ..errors import require
from .frontends import WaveformCNN

logger = logging.getLogger(__name__)


def _first(block: nn.Module, kind: type) -> Optional[nn.Module]:
    """First submodule of ``block`` that is a ``kind`` (fairseq's ``Fp32LayerNorm`` is a ``LayerNorm``)."""
    return next((m for m in block.modules() if isinstance(m, kind)), None)


@torch.no_grad()
def init_from_teacher(teacher, frontend: Optional[nn.Module] = None, ctc: Optional[nn.Linear] = None) -> List[str]:
    """Copy matching teacher tensors into ``frontend`` (a :class:`WaveformCNN`) and ``ctc``.

    Returns the names of what was copied (``conv0``, ``norm0``, ..., ``ctc``). Raises
    :class:`~kd_core.errors.KDConfigError` when nothing matches, naming what to change.
    """
    copied: List[str] = []
    blocks = teacher.conv_blocks()
    if isinstance(frontend, WaveformCNN) and blocks:
        for i, (block, conv, norm) in enumerate(zip(blocks, frontend.convs, frontend.norms)):
            t_conv, t_norm = _first(block, nn.Conv1d), _first(block, nn.LayerNorm)
            if t_conv is not None and t_conv.weight.shape == conv.weight.shape:
                conv.weight.copy_(t_conv.weight)
                copied.append(f"conv{i}")
            if t_norm is not None and t_norm.weight.shape == norm.weight.shape:
                norm.weight.copy_(t_norm.weight)
                norm.bias.copy_(t_norm.bias)
                copied.append(f"norm{i}")
    head = teacher.prediction_layer()
    if ctc is not None and head is not None and head.weight.shape == ctc.weight.shape:
        ctc.weight.copy_(head.weight)
        ctc.bias.copy_(head.bias)
        copied.append("ctc")
    require(copied, "init_from_teacher: no teacher CNN layer or CTC head has the student's shape; give the student "
            "frontend wav_cnn with the teacher's conv layers and/or d_model = the teacher's width with its token list")
    logger.info("student initialised from the teacher: %s", ", ".join(copied))
    return copied
