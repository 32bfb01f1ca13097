"""Transformer and conformer blocks that run either on a whole masked sequence or chunk by chunk.

A block sees ``x (B, T, D)`` plus an optional *prefix* of cached frames from earlier chunks:
``kv_prefix (B, H, P, 2 * D / H)`` (this block's projected keys and values of the P previous frames,
WeNet's attention-cache layout, which the ONNX export hands to the runtime as it is) and
``conv_prefix (B, K-1, D)`` (the depthwise-conv inputs of the previous K-1 frames). With the
prefix the outputs of a chunk equal the outputs of the same frames in a full forward under the
chunk mask, provided the convolution is causal (it is whenever the encoder is chunked).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F


class MultiHeadSelfAttention(nn.Module):
    """Multi-head attention; queries ``(B, Tq, D)``, keys/values ``(B, Tk, D)``, mask ``(B, Tq, Tk)`` (True = attend)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % num_heads:
            from ..errors import KDConfigError

            raise KDConfigError(f"num_heads={num_heads}: must divide d_model={d_model}")
        self.h, self.dk, self.dropout = num_heads, d_model // num_heads, dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def project_kv(self, kv_in: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` -> ``(B, H, T, 2 * D / H)``: per head, the keys then the values of each frame."""
        b, t, _ = kv_in.shape
        return self.kv(kv_in).view(b, t, 2, self.h, self.dk).permute(0, 3, 1, 2, 4).reshape(b, self.h, t, 2 * self.dk)

    def attend(self, q_in: torch.Tensor, kv: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Queries ``(B, Tq, D)`` over projected keys/values ``(B, H, Tk, 2 * D / H)`` -> ``(B, Tq, D)``."""
        b, tq, d = q_in.shape
        q = self.q(q_in).view(b, tq, self.h, self.dk).transpose(1, 2)
        k, v = kv.split(self.dk, dim=-1)
        attn_mask = None if mask is None else mask[:, None]
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        return self.out(y.transpose(1, 2).reshape(b, tq, d))

    def forward(self, q_in: torch.Tensor, kv_in: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        return self.attend(q_in, self.project_kv(kv_in), mask)


class FeedForward(nn.Sequential):
    """Position-wise ``Linear(D, F) -> SiLU -> Dropout -> Linear(F, D)``."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float = 0.0):
        super().__init__(nn.Linear(d_model, ffn_dim), nn.SiLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model))


class ConvModule(nn.Module):
    """Conformer convolution module: pointwise+GLU, depthwise conv, LayerNorm, SiLU, pointwise.

    LayerNorm replaces the usual BatchNorm so nothing depends on batch composition. Padded
    frames are zeroed before the depthwise convolution, so they never leak into valid ones.
    ``causal=True`` pads only on the left (required for streaming).
    """

    def __init__(self, d_model: int, kernel_size: int, causal: bool):
        super().__init__()
        if not causal and kernel_size % 2 == 0:
            from ..errors import KDConfigError

            raise KDConfigError(f"conv_kernel={kernel_size}: a non-causal convolution needs an odd kernel")
        self.k, self.causal = kernel_size, causal
        self.pw1 = nn.Linear(d_model, 2 * d_model)
        self.dw = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        self.norm = nn.LayerNorm(d_model)
        self.pw2 = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, prefix: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``x (B, T, D)``, ``valid (B, T)`` -> ``(B, T, D)`` and the new ``(B, K-1, D)`` prefix (causal only)."""
        h = F.glu(self.pw1(x), dim=-1).masked_fill(~valid[..., None], 0.0)
        if self.causal:
            if prefix is None:
                prefix = h.new_zeros(h.size(0), self.k - 1, h.size(2))
            h = torch.cat([prefix, h], dim=1)
            new_prefix = h[:, h.size(1) - (self.k - 1) :]
            pad = (0, 0)
        else:
            new_prefix, pad = None, ((self.k - 1) // 2, (self.k - 1) // 2)
        h = self.dw(F.pad(h.transpose(1, 2), pad)).transpose(1, 2)
        return self.pw2(F.silu(self.norm(h))), new_prefix


class EncoderBlock(nn.Module):
    """One conformer (macaron FFN, MHSA, conv, FFN, LN) or pre-LN transformer (MHSA, FFN) block.

    Args:
        block_type: ``"conformer"`` or ``"transformer"``.
        causal_conv: causal depthwise convolution (conformer only; needed for streaming).
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, block_type: str = "conformer",
                 conv_kernel: int = 15, causal_conv: bool = True, dropout: float = 0.1):
        super().__init__()
        self.conformer = block_type == "conformer"
        self.drop = nn.Dropout(dropout)
        self.norm_att = nn.LayerNorm(d_model)
        self.att = MultiHeadSelfAttention(d_model, num_heads, dropout)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, ffn_dim, dropout)
        if self.conformer:
            self.norm_ff1 = nn.LayerNorm(d_model)
            self.ff1 = FeedForward(d_model, ffn_dim, dropout)
            self.norm_conv = nn.LayerNorm(d_model)
            self.conv = ConvModule(d_model, conv_kernel, causal_conv)
            self.norm_out = nn.LayerNorm(d_model)

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        attn_mask: Optional[torch.Tensor] = None,
        n_out: Optional[int] = None,
        kv_prefix: Optional[torch.Tensor] = None,
        conv_prefix: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Run the block.

        Args:
            x: ``(B, T, D)`` block input.
            valid: ``(B, T)`` True on real frames.
            attn_mask: ``(B, n_out, P + T)`` True where attention is allowed (``None``: all).
            n_out: only the first ``n_out`` frames are computed as queries/outputs (the rest
                serve as attention look-ahead); default ``T``.
            kv_prefix: ``(B, H, P, 2 * D / H)`` cached projected keys/values of previous frames.
            conv_prefix: ``(B, K-1, D)`` cached depthwise-conv inputs.
        Returns:
            ``(out (B, n_out, D), projected keys/values (B, H, n_out, 2 * D / H) to cache, new conv prefix)``.
        """
        n_out = x.size(1) if n_out is None else n_out
        if self.conformer:
            x = x + 0.5 * self.drop(self.ff1(self.norm_ff1(x)))
        h = self.norm_att(x)
        kv = self.att.project_kv(h)
        kv_all = kv if kv_prefix is None else torch.cat([kv_prefix, kv], dim=2)
        x = x[:, :n_out] + self.drop(self.att.attend(h[:, :n_out], kv_all, attn_mask))
        valid = valid[:, :n_out]
        if self.conformer:
            c, conv_prefix = self.conv(self.norm_conv(x), valid, conv_prefix)
            x = x + self.drop(c)
            x = self.norm_out(x + 0.5 * self.drop(self.ff(self.norm_ff(x))))
        else:
            x = x + self.drop(self.ff(self.norm_ff(x)))
        return x.masked_fill(~valid[..., None], 0.0), kv[:, :, :n_out], conv_prefix
