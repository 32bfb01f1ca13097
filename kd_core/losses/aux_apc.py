"""KD into a streaming encoder through auxiliary non-streaming layers, plus APC future prediction.

Shim et al. 2023 ("Knowledge distillation from non-streaming to streaming ASR encoder using
auxiliary non-streaming layer"). For each mapped pair (teacher layer ``phi(l)``, student layer ``l``):

- **aux**: an auxiliary layer ``A_l`` (a copy of student layer ``l`` with a non-causal convolution,
  or layer ``l`` itself with ``share_weights``) runs with *full-context* attention on the streaming
  student's input to layer ``l``, ``h_{l-1} (B, T, D)``; the layer-to-layer loss compares
  ``head(A_l(h_{l-1}))`` with the teacher's ``phi(l)`` output, so both see the same context.
- **apc**: a head ``g_l`` on the streaming output ``h_l`` at frame ``t`` predicts the teacher's
  ``phi(l)`` at frame ``t + k`` (frames whose target lies beyond the end are masked), which teaches
  the streaming layer the future context it cannot see.

Per valid frame, each term is ``l1 * mean|.| + l2 * mean(.)^2 - cos * log sigmoid(cos)`` (as in
:mod:`.layerwise`). Returns ``(aux_weight * aux_sum + apc_weight * apc_sum, valid frames, stats)``.
Auxiliary layers exist only for training: they live in this loss module, which export drops.
"""
from __future__ import annotations

import copy
from typing import Dict, Sequence, Tuple

import torch
from torch import nn

from ..errors import require
from ..streaming import frame_rate_ratio, lengths_to_mask
from .layerwise import LayerMapSpec, masked_layer_loss, match_frame_rate, normalize_target, parse_layer_map


class AuxAPCKDLoss(nn.Module):
    """Auxiliary full-context branches + APC heads for a :class:`~kd_core.students.encoder.ChunkedEncoder`.

    Args:
        encoder: the student's chunked encoder (its layers are copied, or shared, not owned).
        teacher_dim, teacher_layers, teacher_shift_ms, student_shift_ms: from the teacher/student.
        layer_map: teacher->student pairs; student layers must be ``>= 1``.
        use_aux, use_apc: switch each part off for ablations (at least one must be on).
        share_weights: the auxiliary branch of layer ``l`` is layer ``l`` itself (no extra parameters).
        apc_shift: ``k``, how many student frames ahead APC predicts (2: 80 ms with 40 ms frames).
        aux_weight, apc_weight, l1_weight, l2_weight, cos_weight: term weights.
        target_norm: layer-normalise every teacher frame first (:func:`~.layerwise.normalize_target`).
    Forward:
        ``teacher_hidden``/``student_hidden`` lists of ``(B, T, D)`` indexed by layer + lengths ``(B,)``.
    """

    def __init__(self, encoder: nn.Module, teacher_dim: int, teacher_layers: int, layer_map: LayerMapSpec,
                 teacher_shift_ms: float = 20.0, student_shift_ms: float = 40.0, use_aux: bool = True,
                 use_apc: bool = True, share_weights: bool = False, apc_shift: int = 2, aux_weight: float = 1.0,
                 apc_weight: float = 1.0, l1_weight: float = 1.0, l2_weight: float = 0.0, cos_weight: float = 1.0,
                 target_norm: bool = False):
        super().__init__()
        self.target_norm = target_norm
        require(hasattr(encoder, "layers") and hasattr(encoder, "d_model"),
                "aux_apc: the student encoder must be the core's chunked encoder (ESPnet: --encoder kd_chunked)")
        self.pairs = parse_layer_map(layer_map, teacher_layers, encoder.num_layers)
        require(all(s >= 1 for _, s in self.pairs), "aux_apc layer_map: student layers start at 1 (layer 0 has no block)")
        require(use_aux or use_apc, "aux_apc: use_aux and use_apc are both false; enable at least one")
        require(apc_shift >= 1, f"apc_shift={apc_shift}: must be >= 1 frame")
        self.ratio = frame_rate_ratio(teacher_shift_ms, student_shift_ms)
        self._encoder = [encoder]  # not a submodule: its parameters belong to the student
        self.use_aux, self.use_apc, self.share, self.k = use_aux, use_apc, share_weights, apc_shift
        self.weights = (aux_weight, apc_weight)
        self.w = (l1_weight, l2_weight, cos_weight)
        d = encoder.d_model
        if use_aux and not share_weights:
            aux = []
            for _, s in self.pairs:
                block = copy.deepcopy(encoder.layers[s - 1])  # starts as the streaming layer, then trains on its own
                if getattr(block, "conformer", False) and block.conv.k % 2 == 1:
                    block.conv.causal = False  # full context: centred convolution (same weight shapes)
                aux.append(block)
            self.aux_layers = nn.ModuleList(aux)
        self.aux_heads = nn.ModuleList(nn.Linear(d, teacher_dim) for _ in self.pairs) if use_aux else None
        self.apc_heads = nn.ModuleList(nn.Linear(d, teacher_dim) for _ in self.pairs) if use_apc else None

    def _aux_block(self, i: int, s: int) -> nn.Module:
        return self._encoder[0].layers[s - 1] if self.share else self.aux_layers[i]

    def forward(self, teacher_hidden: Sequence[torch.Tensor], teacher_lengths: torch.Tensor,
                student_hidden: Sequence[torch.Tensor], student_lengths: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
        t_max = student_hidden[0].size(1)
        total = student_hidden[0].new_zeros(())
        stats: Dict[str, float] = {}
        lens = student_lengths
        valid = lengths_to_mask(lens, t_max)
        full = valid[:, None, :].expand(-1, t_max, -1)
        full = full | ~full.any(-1, keepdim=True)  # rows of padded frames: avoid NaN, zeroed by the block
        for i, (t, s) in enumerate(self.pairs):
            tgt, t_len = match_frame_rate(normalize_target(teacher_hidden[t], self.target_norm), teacher_lengths,
                                          self.ratio, "pool")
            n = min(t_max, tgt.size(1))
            both = torch.minimum(lens, t_len).clamp(max=n)
            if self.use_aux:
                x, _, _ = self._aux_block(i, s)(student_hidden[s - 1], valid, full)
                loss, st = masked_layer_loss(self.aux_heads[i](x[:, :n]), tgt[:, :n].to(x.dtype), lengths_to_mask(both, n), *self.w)
                total = total + self.weights[0] * loss
                stats.update({f"aux_{k}_t{t}s{s}": v for k, v in st.items()})
            if self.use_apc:
                require(n > self.k, f"apc_shift={self.k}: not shorter than this batch's {n} student frames, so APC has "
                        "nothing to predict; lower kd_loss_conf apc_shift or drop the shortest utterances")
                pred = self.apc_heads[i](student_hidden[s][:, : n - self.k])
                m = lengths_to_mask((both - self.k).clamp(min=0), n - self.k)
                loss, st = masked_layer_loss(pred, tgt[:, self.k : n].to(pred.dtype), m, *self.w)
                total = total + self.weights[1] * loss
                stats.update({f"apc_{k}_t{t}s{s}": v for k, v in st.items()})
        denom = lens.sum()
        return total, denom, stats

