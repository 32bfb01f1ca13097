"""Chunked conformer/transformer encoder: full masked forward and exact chunk-by-chunk streaming.

Streaming semantics (both paths agree exactly):
- frames are grouped in chunks of ``chunk_size``; a frame attends its own chunk and
  ``num_left_chunks`` previous chunks (``-1``: all history);
- the *first* layer additionally sees ``right_context`` look-ahead frames beyond its chunk,
  so look-ahead does not grow with depth and latency is ``chunk + right_context`` frames;
- the conformer convolution is causal.

Squeezed (SEW, Wu et al. 2022) when ``squeeze = s > 1``: the front-end frames are average-pooled in
groups of ``s`` before the stack, which runs at ``1/s`` of the frame rate (chunks, look-ahead and
positions in squeezed frames, so ``chunk_size`` and ``right_context`` are multiples of ``s``), and
the output is brought back to the input frame rate: the last layer through a learnt MLP upsampling
(``D -> D -> s * D``, reshaped to ``s`` frames), the other layers by repeating each frame ``s``
times. Output frame count and lengths equal the unsqueezed encoder's; a chunk still needs exactly
its own ``chunk_size`` input frames, so the algorithmic latency is unchanged.
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
    raw: Optional[torch.Tensor] = None  # (1, n < squeeze, F) input frames of an incomplete squeeze group
    raw_total: int = 0  # input frames received (the output never exceeds them)
    out_total: int = 0  # output frames returned


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
        squeeze: SEW sequence squeezing factor ``s`` (``1``: off; see the module docstring).
    Shapes:
        ``forward``: ``(B, T, input_dim)`` + ``(B,)`` -> list of ``num_layers + 1`` tensors
        ``(B, T, d_model)`` (index 0 = embedded input) + ``(B,)``.
    """

    def __init__(self, input_dim: int, d_model: int = 144, num_layers: int = 6, num_heads: int = 4,
                 ffn_dim: int = 576, block_type: str = "conformer", conv_kernel: int = 15, dropout: float = 0.1,
                 chunk_size: int = 0, num_left_chunks: int = -1, right_context: int = 0,
                 dynamic_chunk: bool = False, causal_conv: Optional[bool] = None, squeeze: int = 1):
        super().__init__()
        require(block_type in ("conformer", "transformer"), f"block_type={block_type!r}: use 'conformer' or 'transformer'")
        require(chunk_size >= 0 and right_context >= 0, f"chunk_size={chunk_size}, right_context={right_context}: must be >= 0")
        require(isinstance(squeeze, int) and squeeze >= 1, f"squeeze={squeeze!r}: a whole number >= 1 (1 = no squeezing)")
        require(chunk_size % squeeze == 0 and right_context % squeeze == 0, f"chunk_size={chunk_size}, right_context="
                f"{right_context}: must be multiples of squeeze={squeeze} (the stack runs on squeezed frames)")
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
        self.squeeze = squeeze
        if squeeze > 1:
            self.upsample = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, squeeze * d_model))

    # ---- SEW squeezing ----------------------------------------------------------------------
    def _pool(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B, n * s, F)`` -> ``(B, n, F)``: the mean of each group of ``s`` frames."""
        b, t, f = feats.shape
        return feats.view(b, t // self.squeeze, self.squeeze, f).mean(2)

    def _unpool(self, hidden: List[torch.Tensor]) -> List[torch.Tensor]:
        """Squeezed ``(B, n, D)`` states -> ``(B, n * s, D)``: repeated frames, the last layer's upsampled."""
        out = [h.repeat_interleave(self.squeeze, dim=1) for h in hidden[:-1]]
        last = self.upsample(hidden[-1])
        return out + [last.reshape(last.size(0), last.size(1) * self.squeeze, self.d_model)]

    def output_size(self) -> int:
        return self.d_model

    def embed_frames(self, feats: torch.Tensor, start=0) -> torch.Tensor:
        """``(B, T, F)`` -> ``(B, T, D)`` projected frames plus positions ``start..``."""
        x = self.embed(feats)
        return self.dropout(x + sinusoidal_positions(start, x.size(1), self.d_model, x.device))

    def _chunk(self) -> int:
        if self.training and self.dynamic_chunk and self.chunk_size > 0 and random.random() < 0.5:
            return self.squeeze * random.randint(1, 2 * self.chunk_size // self.squeeze)
        return self.chunk_size

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor, chunk_size: Optional[int] = None) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Full forward under the chunk mask (``chunk_size`` overrides the configured one)."""
        chunk = self._chunk() if chunk_size is None else chunk_size
        s, t_in, in_lengths = self.squeeze, feats.size(1), lengths
        if s > 1:
            require(chunk % s == 0, f"chunk_size={chunk}: must be a multiple of squeeze={s}")
            feats = feats.masked_fill(~lengths_to_mask(lengths, t_in)[..., None], 0.0)  # what the stream pads with
            feats = self._pool(nn.functional.pad(feats, (0, 0, 0, -t_in % s)))
            lengths, chunk = (lengths + s - 1) // s, chunk // s
        x = self.embed_frames(feats)
        t = x.size(1)
        valid = lengths_to_mask(lengths, t)
        x = x.masked_fill(~valid[..., None], 0.0)
        key_ok = valid[:, None, :]
        masks = []
        for right in (self.right_context // s, 0):
            m = chunk_attention_mask(t, chunk, self.num_left_chunks, right, x.device)[None] & key_ok
            masks.append(m | ~m.any(-1, keepdim=True))  # padded rows with no key: avoid NaN, zeroed later
        hidden = [x]
        for i, layer in enumerate(self.layers):
            x, _, _ = layer(x, valid, masks[0] if i == 0 else masks[1])
            hidden.append(x)
        if s > 1:
            keep = lengths_to_mask(in_lengths, t_in)[..., None]
            hidden = [h[:, :t_in].masked_fill(~keep, 0.0) for h in self._unpool(hidden)]
        return hidden, in_lengths

    # ---- streaming (batch size 1) -------------------------------------------------------
    def init_state(self) -> StreamState:
        require(self.chunk_size > 0, "chunk_size=0: a full-context encoder cannot stream; set chunk_size > 0")
        return StreamState(kv=[None] * self.num_layers, conv=[None] * self.num_layers)

    def stream_step(self, feats: torch.Tensor, state: StreamState, final: bool = False) -> Tuple[List[torch.Tensor], StreamState]:
        """Feed ``(1, n, F)`` new frames; returns hidden states ``[(1, m, D)] * (L+1)`` of completed frames.

        A chunk is processed once ``chunk_size + right_context`` frames are pending (or at
        ``final``, which flushes everything).
        """
        s = self.squeeze
        if s > 1:  # pool complete groups of s input frames; the last group is completed with zeros at the end
            state.raw_total += feats.size(1)
            raw = feats if state.raw is None else torch.cat([state.raw, feats], dim=1)
            if final:
                raw = nn.functional.pad(raw, (0, 0, 0, -raw.size(1) % s))
            n = raw.size(1) // s * s
            feats, state.raw = self._pool(raw[:, :n]), raw[:, n:]
        new = self.embed_frames(feats, state.emitted)
        state.emitted += new.size(1)
        state.pending = new if state.pending is None else torch.cat([state.pending, new], dim=1)
        c, r = self.chunk_size // s, self.right_context // s
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
        hidden = [torch.cat(o, dim=1) if o else empty for o in outs]
        if s > 1:
            hidden = [h[:, : state.raw_total - state.out_total] for h in self._unpool(hidden)]  # no frames past the input
            state.out_total += hidden[0].size(1)
        return hidden, state
