"""Padding-aware group normalisation for batched waveform CNNs (wav2vec 2.0 / HuBERT Base ``"default"``
extractors), so a padded batch gives every utterance the targets of running it alone.

The first block of those CNNs normalises each channel over time (``GroupNorm(C, C)``: fairseq's
``Fp32GroupNorm``, torchaudio's ``ConvLayerBlock.layer_norm``, transformers' ``*GroupNormConvLayer``), so
its statistics would include the padding. Everything else in the CNN is a valid (unpadded) convolution
or a per-frame operation: an output frame inside an utterance's length only reads samples inside it. So
it is enough to compute each GroupNorm's statistics over the frames inside each utterance's length and to
zero the frames beyond it. This is done with forward hooks on the toolkits' own modules (no toolkit code
is edited or copied): the hook returns the masked normalisation in place of the module's output.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Sequence

import torch
from torch import nn


def masked_group_norm(x: torch.Tensor, lengths: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """``GroupNorm`` of ``x (B, C, T)`` with statistics over each row's first ``lengths[b]`` frames only
    (computed in float32, as fairseq's ``Fp32GroupNorm``); frames beyond a length are zero."""
    b, c, t = x.shape
    g = norm.num_groups
    valid = (torch.arange(t, device=x.device)[None, :] < lengths[:, None]).to(torch.float32)  # (B, T)
    xg = x.float().reshape(b, g, c // g, t)
    m = valid[:, None, None, :]
    n = (lengths.to(torch.float32) * (c // g)).clamp(min=1)[:, None, None, None]
    mean = (xg * m).sum((2, 3), keepdim=True) / n
    var = (((xg - mean) * m) ** 2).sum((2, 3), keepdim=True) / n
    y = ((xg - mean) / torch.sqrt(var + norm.eps)).reshape(b, c, t)
    if norm.affine:
        y = y * norm.weight.float()[None, :, None] + norm.bias.float()[None, :, None]
    return (y * valid[:, None, :]).to(x.dtype)


def block_lengths(blocks: Sequence[nn.Module], lengths: torch.Tensor) -> List[torch.Tensor]:
    """Output frames of each conv block (``(L - k) // s + 1`` per block's ``Conv1d``) for ``lengths (B,)`` samples."""
    out = []
    for block in blocks:
        conv = next(m for m in block.modules() if isinstance(m, nn.Conv1d))
        lengths = torch.div(lengths - conv.kernel_size[0], conv.stride[0], rounding_mode="floor") + 1
        out.append(lengths)
    return out


def has_group_norm(blocks: Sequence[nn.Module]) -> bool:
    """Whether any block normalises over time (the batch would leak into targets without the hooks)."""
    return any(isinstance(m, nn.GroupNorm) for b in blocks for m in b.modules())


@contextmanager
def padding_aware_group_norm(blocks: Sequence[nn.Module], lengths: torch.Tensor) -> Iterator[None]:
    """Within the block, every ``GroupNorm`` of the conv ``blocks`` normalises over valid frames only
    (:func:`masked_group_norm`) for a batch of ``lengths (B,)`` samples."""
    hooks = []
    for block, n in zip(blocks, block_lengths(blocks, lengths)):
        for mod in block.modules():
            if isinstance(mod, nn.GroupNorm):
                hooks.append(mod.register_forward_hook(lambda m, args, out, n=n: masked_group_norm(args[0], n.to(args[0].device), m)))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


__all__ = ["block_lengths", "has_group_norm", "masked_group_norm", "padding_aware_group_norm"]
