"""ESPnet encoder wrapping the core's chunked streaming encoder (``kd_core.students.encoder``)."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder

from kd_core.students.encoder import ChunkedEncoder


class KDChunkedEncoder(AbsEncoder):
    """Conformer/transformer encoder with chunk attention masks (exact chunk-by-chunk streaming).

    Args:
        input_size: front-end output size (set by the task).
        **kwargs: :class:`kd_core.students.encoder.ChunkedEncoder` options (``d_model``,
            ``num_layers``, ``chunk_size`` in frames, ``num_left_chunks``, ``right_context``, ``squeeze`` (SEW), ...).
    Shapes:
        ``forward``: ``(B, T, input_size)`` + ``(B,)`` -> ``(B, T, d_model)`` + ``(B,)`` + ``None``.
        After a forward, :attr:`hidden_states` holds all ``num_layers + 1`` layer outputs.
    """

    def __init__(self, input_size: int, d_model: int = 144, num_layers: int = 6, num_heads: int = 4, ffn_dim: int = 576,
                 block_type: str = "conformer", conv_kernel: int = 15, dropout: float = 0.1, chunk_size: int = 0,
                 num_left_chunks: int = -1, right_context: int = 0, dynamic_chunk: bool = False,
                 causal_conv: Optional[bool] = None, squeeze: int = 1):
        super().__init__()
        self.net = ChunkedEncoder(input_size, d_model=d_model, num_layers=num_layers, num_heads=num_heads, ffn_dim=ffn_dim,
                                  block_type=block_type, conv_kernel=conv_kernel, dropout=dropout, chunk_size=chunk_size,
                                  num_left_chunks=num_left_chunks, right_context=right_context,
                                  dynamic_chunk=dynamic_chunk, causal_conv=causal_conv, squeeze=squeeze)
        self.hidden_states: List[torch.Tensor] = []

    @property
    def encoders(self) -> torch.nn.ModuleList:
        """The blocks, under ESPnet's attribute name (so layer hooks find them, e.g. when this student teaches)."""
        return self.net.layers

    @property
    def num_layers(self) -> int:
        return self.net.num_layers

    def output_size(self) -> int:
        return self.net.d_model

    def forward(self, xs_pad: torch.Tensor, ilens: torch.Tensor, prev_states: Optional[torch.Tensor] = None,
                ) -> Tuple[torch.Tensor, torch.Tensor, None]:
        hidden, lens = self.net(xs_pad, ilens)
        self.hidden_states = hidden
        return hidden[-1], lens, None
