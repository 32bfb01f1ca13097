"""Capture per-layer outputs of a stack of blocks with forward hooks (no model code edited)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Sequence

import torch
from torch import nn


def first_tensor(x) -> torch.Tensor:
    """Blocks may pass ``((x, pos_emb), mask)`` (ESPnet relative-position conformer) or ``(x, mask)``."""
    while isinstance(x, (tuple, list)):
        x = x[0]
    return x


@contextmanager
def capture_layers(blocks: Sequence[nn.Module]) -> Iterator[List[torch.Tensor]]:
    """Within the block, a forward through ``blocks`` fills the yielded list with ``len(blocks) + 1``
    tensors ``(B, T, D)``: index 0 the input of the first block, index ``i`` the output of block ``i``.
    The hooks return ``None``, so inputs and outputs are never replaced."""
    captured: List[torch.Tensor] = []

    def grab_input(_module, args):
        captured.append(first_tensor(args[0]))

    def grab_output(_module, _args, out):
        captured.append(first_tensor(out))

    hooks = [blocks[0].register_forward_pre_hook(grab_input)] + [b.register_forward_hook(grab_output) for b in blocks]
    try:
        yield captured
    finally:
        for h in hooks:
            h.remove()
