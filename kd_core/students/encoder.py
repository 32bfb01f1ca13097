"""Chunked conformer/transformer encoder: full masked forward and exact chunk-by-chunk streaming.

Streaming semantics (both paths agree exactly):
- frames are grouped in chunks of ``chunk_size``; a frame attends its own chunk and
  ``num_left_chunks`` previous chunks (``-1``: all history);
- the *first* layer additionally sees ``right_context`` look-ahead frames beyond its chunk,
  so look-ahead does not grow with depth and latency is ``chunk + right_context`` frames;
- the conformer convolution is causal.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import nn

from ..errors import require
from ..streaming import chunk_attention_mask, lengths_to_mask
from .blocks import EncoderBlock


def sinusoidal_positions(start, length: int, dim: int, device=None) -> torch.Tensor:
    """Absolute sinusoidal encodings for positions ``start .. start+length-1``: ``(length, dim)``.

    ``start`` is an int or a one-element tensor (the ONNX export passes the runtime's offset)."""
    pos = (torch.arange(length, device=device, dtype=torch.float32) + start)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe


@dataclass
class StreamState:
    """Carried between :meth:`ChunkedEncoder.stream_step` calls (batch size 1)."""

    emitted: int = 0  # frames already embedded (absolute position of the next one)
    pending: Optional[torch.Tensor] = None  # (1, n, D) embedded frames not yet processed
    kv: List[Optional[torch.Tensor]] = field(default_factory=list)  # per layer (1, H, P, 2 * D / H) keys/values
    conv: List[Optional[torch.Tensor]] = field(default_factory=list)


class ChunkedEncoder(nn.Module):
    """Stack of :class:`EncoderBlock` over front-end frames.

    Args:
        input_dim: feature size of the front-end frames.
        d_model, num_layers, num_heads, ffn_dim: model size.
        block_type: ``"conformer"`` or ``"transformer"``.
        conv_kernel: depthwise kernel of the conformer convolution.
        chunk_size: frames per chunk; ``0`` = full context (non-streaming).
        num_left_chunks: history in chunks (``-1``: unlimited).
        right_context: look-ahead frames of the first layer.
        dynamic_chunk: during training draw a chunk size per batch in ``[1, 2*chunk_size]``
            (half of the batches keep ``chunk_size``), so one model serves several latencies.
        causal_conv: default ``chunk_size > 0``.
    Shapes:
        ``forward``: ``(B, T, input_dim)`` + ``(B,)`` -> list of ``num_layers + 1`` tensors
        ``(B, T, d_model)`` (index 0 = embedded input) + ``(B,)``.
    """

    def __init__(self, input_dim: int, d_model: int = 144, num_layers: int = 6, num_heads: int = 4,
                 ffn_dim: int = 576, block_type: str = "conformer", conv_kernel: int = 15, dropout: float = 0.1,
                 chunk_size: int = 0, num_left_chunks: int = -1, right_context: int = 0,
                 dynamic_chunk: bool = False, causal_conv: Optional[bool] = None):
        super().__init__()
        require(block_type in ("conformer", "transformer"), f"block_type={block_type!r}: use 'conformer' or 'transformer'")
        require(chunk_size >= 0 and right_context >= 0, f"chunk_size={chunk_size}, right_context={right_context}: must be >= 0")
        causal_conv = chunk_size > 0 if causal_conv is None else causal_conv
        require(causal_conv or chunk_size == 0, "causal_conv=False with chunk_size>0: a streaming encoder needs a causal convolution")
        self.d_model, self.num_layers = d_model, num_layers
        self.chunk_size, self.num_left_chunks, self.right_context = chunk_size, num_left_chunks, right_context
        self.dynamic_chunk = dynamic_chunk
        self.embed = nn.Sequential(nn.Linear(input_dim, d_model), nn.LayerNorm(d_model))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            EncoderBlock(d_model, num_heads, ffn_dim, block_type, conv_kernel, causal_conv, dropout) for _ in range(num_layers)
        )

    def output_size(self) -> int:
        return self.d_model

    def embed_frames(self, feats: torch.Tensor, start=0) -> torch.Tensor:
        """``(B, T, F)`` -> ``(B, T, D)`` projected frames plus positions ``start..``."""
        x = self.embed(feats)
        return self.dropout(x + sinusoidal_positions(start, x.size(1), self.d_model, x.device))

    def _chunk(self) -> int:
        if self.training and self.dynamic_chunk and self.chunk_size > 0 and random.random() < 0.5:
            return random.randint(1, 2 * self.chunk_size)
        return self.chunk_size

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor, chunk_size: Optional[int] = None) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Full forward under the chunk mask (``chunk_size`` overrides the configured one)."""
        chunk = self._chunk() if chunk_size is None else chunk_size
        x = self.embed_frames(feats)
        t = x.size(1)
        valid = lengths_to_mask(lengths, t)
        x = x.masked_fill(~valid[..., None], 0.0)
        key_ok = valid[:, None, :]
        masks = []
        for right in (self.right_context, 0):
            m = chunk_attention_mask(t, chunk, self.num_left_chunks, right, x.device)[None] & key_ok
            masks.append(m | ~m.any(-1, keepdim=True))  # padded rows with no key: avoid NaN, zeroed later
        hidden = [x]
        for i, layer in enumerate(self.layers):
            x, _, _ = layer(x, valid, masks[0] if i == 0 else masks[1])
            hidden.append(x)
        return hidden, lengths

    # ---- streaming (batch size 1) -------------------------------------------------------
    def init_state(self) -> StreamState:
        require(self.chunk_size > 0, "chunk_size=0: a full-context encoder cannot stream; set chunk_size > 0")
        return StreamState(kv=[None] * self.num_layers, conv=[None] * self.num_layers)

    def stream_step(self, feats: torch.Tensor, state: StreamState, final: bool = False) -> Tuple[List[torch.Tensor], StreamState]:
        """Feed ``(1, n, F)`` new frames; returns hidden states ``[(1, m, D)] * (L+1)`` of completed frames.

        A chunk is processed once ``chunk_size + right_context`` frames are pending (or at
        ``final``, which flushes everything).
        """
        new = self.embed_frames(feats, state.emitted)
        state.emitted += new.size(1)
        state.pending = new if state.pending is None else torch.cat([state.pending, new], dim=1)
        c, r = self.chunk_size, self.right_context
        keep = None if self.num_left_chunks < 0 else self.num_left_chunks * c
        outs: List[List[torch.Tensor]] = [[] for _ in range(self.num_layers + 1)]
        while state.pending.size(1) >= c + r or (final and state.pending.size(1) > 0):
            n_out = min(c, state.pending.size(1))
            x = state.pending[:, : n_out + r]
            outs[0].append(x[:, :n_out])
            valid = torch.ones(1, x.size(1), dtype=torch.bool)
            for i, layer in enumerate(self.layers):
                x, kv_new, state.conv[i] = layer(x, valid, None, n_out, state.kv[i], state.conv[i])
                kv = kv_new if state.kv[i] is None else torch.cat([state.kv[i], kv_new], dim=2)
                state.kv[i] = kv if keep is None else kv[:, :, kv.size(2) - min(keep, kv.size(2)) :]
                valid = valid[:, :n_out]
                outs[i + 1].append(x)
            state.pending = state.pending[:, n_out:]
        empty = torch.zeros(1, 0, self.d_model)
        return [torch.cat(o, dim=1) if o else empty for o in outs], state
