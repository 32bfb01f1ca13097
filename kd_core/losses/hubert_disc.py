"""HuBERT discriminative (codeword) distillation: match the teacher's distribution over its own k-means
codebook, on top of layer-to-layer regression.

The exact form of the published loss is not public; this module uses the following definition. For a
pre-trained HuBERT with projection ``P`` (fairseq ``HubertModel.final_proj``; torchaudio
``HuBERTPretrainModel.logit_generator.final_proj``), codebook ``e_k`` (fairseq ``label_embs_concat``, all
``K`` rows of all label sets, special symbols included, as fairseq's cross-entropy sees them; torchaudio
``logit_generator.label_embeddings``) and temperature ``tau`` (``logit_temp``, 0.1), per valid frame ``t``::

    p_T(k | t) = softmax_k( cos(P h_T(t), e_k) / tau )              h_T: the teacher's last layer
    p_S(k | t) = softmax_k( cos(P W x_S(t), e_k) / tau )            x_S: the student's last mapped layer,
                                                                    W: a learnt projection to the teacher's width
    L_disc = sum_t KL(p_T(. | t) || p_S(. | t))

``cos(P h, e_k) / tau`` is exactly the score fairseq's ``HubertModel.compute_nce`` gives codeword ``k``
(the positive column of ``logit_m_list`` / ``logit_u_list`` when ``k`` is the target). ``P`` and ``e`` stay
frozen (non-persistent buffers: never trained, never saved). torchaudio's ``import_fairseq_model`` drops
both tensors, so the codebook is read from the fairseq checkpoint. A teacher at a finer frame rate has its
probabilities averaged onto the student's frames (a mixture of the frames' distributions).

The total is ``regression + disc_weight * L_disc`` summed over valid student frames, with the number of
valid frames as the denominator (the regression term is :class:`LayerwiseKDLoss`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import require
from ..streaming import lengths_to_mask
from .layerwise import LayerMapSpec, LayerwiseKDLoss, match_frame_rate


@dataclass
class HubertCodebook:
    """The frozen scoring pieces of a pre-trained HuBERT.

    Attributes:
        proj_weight: ``(F, D)`` and ``proj_bias``: ``(F,)``: ``final_proj`` (``D`` = encoder width).
        codewords: ``(K, F)``: the label embeddings of every label set, concatenated.
        temperature: ``logit_temp``.
    """

    proj_weight: torch.Tensor
    proj_bias: torch.Tensor
    codewords: torch.Tensor
    temperature: float = 0.1

    @property
    def dim(self) -> int:
        """Encoder width ``D`` that ``final_proj`` reads."""
        return self.proj_weight.size(1)


def codeword_log_probs(hidden: torch.Tensor, proj_weight: torch.Tensor, proj_bias: torch.Tensor, codewords: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """``hidden (B, T, D)`` -> ``log p(k | t)`` ``(B, T, K)`` with ``p = softmax_k(cos(P h, e_k) / tau)``.

    Cosines come from unit vectors and one matrix product (``O(B T K)`` memory, not ``O(B T K F)``)."""
    x = F.linear(hidden.float(), proj_weight.float(), proj_bias.float())
    scores = F.normalize(x, dim=-1, eps=1e-8) @ F.normalize(codewords.float(), dim=-1, eps=1e-8).T
    return (scores / temperature).log_softmax(-1)


class HubertDiscKDLoss(nn.Module):
    """Layer-to-layer regression (:class:`LayerwiseKDLoss`) + the HuBERT codeword KL (module docstring).

    Args:
        teacher_dim, student_dim, layer_map, teacher_layers, student_layers, teacher_shift_ms, student_shift_ms,
        l1_weight, l2_weight, cos_weight, heads, rate_mode, target_norm: as :class:`LayerwiseKDLoss`.
        codebook: the codebook teacher's :class:`HubertCodebook` (derived from the teacher; see
            :func:`kd_core.teachers.hubert_codebook`).
        disc_weight: weight of the codeword KL (per valid frame, as the regression).
    Forward:
        as :class:`LayerwiseKDLoss`, plus optional ``codebook_hidden (B, T', D)`` / ``codebook_lengths (B,)``:
        the last layer of a separate codebook teacher (default: ``teacher_hidden[-1]``, the teacher's own last
        layer, for a pre-trained HuBERT teacher) -> ``(loss_sum, valid frames, stats)``.
    """

    def __init__(self, teacher_dim: int, student_dim: int, layer_map: LayerMapSpec, teacher_layers: int, student_layers: int,
                 codebook: HubertCodebook, teacher_shift_ms: float = 20.0, student_shift_ms: float = 40.0,
                 disc_weight: float = 1.0, l1_weight: float = 1.0, l2_weight: float = 0.0, cos_weight: float = 1.0,
                 heads: str = "linear", rate_mode: str = "pool", target_norm: bool = False):
        super().__init__()
        self.regression = LayerwiseKDLoss(teacher_dim, student_dim, layer_map, teacher_layers, student_layers, teacher_shift_ms,
                                          student_shift_ms, l1_weight, l2_weight, cos_weight, heads, rate_mode, target_norm)
        self.pairs = self.regression.pairs
        require(disc_weight >= 0, f"disc_weight={disc_weight}: must be >= 0")
        self.disc_weight = float(disc_weight)
        self.student_layer = max(s for _, s in self.pairs)
        #: the teacher's last layer feeds p_T: read by the loss besides the regression pairs (teacher-target caches)
        self.extra_teacher_layers = (teacher_layers,)
        self.disc_proj = nn.Linear(student_dim, codebook.dim)
        self.register_buffer("proj_weight", codebook.proj_weight.detach().float().clone(), persistent=False)
        self.register_buffer("proj_bias", codebook.proj_bias.detach().float().clone(), persistent=False)
        self.register_buffer("codewords", codebook.codewords.detach().float().clone(), persistent=False)
        self.temperature = float(codebook.temperature)
        self.ratio, self.student_coarser = self.regression.ratio, self.regression.student_coarser

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` teacher-width features -> codeword log-probabilities ``(B, T, K)``."""
        return codeword_log_probs(hidden, self.proj_weight, self.proj_bias, self.codewords, self.temperature)

    def forward(self, teacher_hidden: Sequence[torch.Tensor], teacher_lengths: torch.Tensor, student_hidden: Sequence[torch.Tensor],
                student_lengths: torch.Tensor, codebook_hidden: Optional[torch.Tensor] = None,
                codebook_lengths: Optional[torch.Tensor] = None):
        total, denom, stats = self.regression(teacher_hidden, teacher_lengths, student_hidden, student_lengths)
        if codebook_hidden is None:
            codebook_hidden, codebook_lengths = teacher_hidden[self.extra_teacher_layers[0]], teacher_lengths
        with torch.no_grad():
            lp_t, t_len = self.log_probs(codebook_hidden), codebook_lengths
        lp_s, s_len = self.log_probs(self.disc_proj(student_hidden[self.student_layer])), student_lengths
        if self.student_coarser:
            lp_t, t_len = match_frame_rate(lp_t, t_len, self.ratio, "prob")
        else:
            lp_s, s_len = match_frame_rate(lp_s, s_len, self.ratio, "prob")
        n = min(lp_t.size(1), lp_s.size(1))
        lens = torch.minimum(t_len, s_len).clamp(max=n)
        mask = lengths_to_mask(lens, n).to(lp_s.dtype)
        lp_t, lp_s = lp_t[:, :n], lp_s[:, :n]
        kl = ((lp_t.exp() * (lp_t - lp_s)).sum(-1) * mask).sum()
        frames = mask.sum().clamp(min=1)
        agree = ((lp_t.argmax(-1) == lp_s.argmax(-1)).to(mask.dtype) * mask).sum() / frames
        stats.update(kd_disc=(kl / frames).item(), kd_disc_agree=agree.item())
        total = total + self.disc_weight * kl
        stats["kd_layer"] = (total / denom.clamp(min=1)).item()
        return total, denom, stats
