"""Pure-torch LF-MMI (no k2): batched log-semiring forward over an arc-list graph, and the
modified LF-MMI prediction-layer distillation loss of DistillW2V2.

Forward recursion, per utterance (``y_t (P,)`` pdf scores, arcs ``e = (s_e, d_e, p_e, w_e)``)::

    alpha_0(s)   = start(s)
    alpha_t(d)   = logsumexp_{e: d_e = d} [alpha_{t-1}(s_e) + w_e + y_t(p_e)]      t = 1..T
    log Z        = logsumexp_s [alpha_T(s) + final(s)]

computed with a max-shifted log-sum-exp per destination state, so long inputs never overflow.
Each utterance's ``log Z`` is read at its own length, so padded frames never count. With ``leaky_hmm = c > 0`` every
step adds ``log(c / S) + logsumexp(alpha)`` to each of the ``S`` states (a leaky HMM as in Povey
et al. 2016, with a uniform restart distribution), letting paths restart anywhere. ``d log Z / d y_t(k)`` is the posterior occupancy ``gamma_t(k)``, taken by autograd.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import torch
from torch import nn

from ..errors import require
from ..streaming import lengths_to_mask
from .layerwise import match_frame_rate
from .lfmmi_graph import Graph, ctc_num_graph


def _scatter_logsumexp(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``values (B, E)``, ``index (E,)`` -> ``(B, size)`` log-sum-exp of the values per index."""
    b = values.size(0)
    idx = index.expand(b, -1)
    m = values.new_full((b, size), float("-inf")).scatter_reduce(1, idx, values, "amax", include_self=True)
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    s = values.new_zeros((b, size)).scatter_add(1, idx, (values - m_safe.gather(1, idx)).exp())
    ok = s > 0  # states no arc reaches stay -inf without a 0 * inf (NaN) gradient
    return torch.where(ok, m_safe + torch.where(ok, s, torch.ones_like(s)).log(), torch.full_like(s, float("-inf")))


def _dense_form(g: Graph):
    """``(exp(W) (S, S), pdf of each state (S,))`` when every arc's pdf is fixed by its destination
    state (true for CTC numerator and CTC-bigram denominator graphs), else ``None``."""
    state_pdf = torch.full((g.num_states,), -1, dtype=torch.long)
    state_pdf[g.dst] = g.pdf
    if not torch.equal(state_pdf[g.dst], g.pdf):
        return None
    w = torch.zeros(g.num_states, g.num_states, dtype=torch.float64)
    w.index_put_((g.src, g.dst), g.weight.double().exp(), accumulate=True)
    return w, state_pdf.clamp(min=0)


def _safe_log(p: torch.Tensor) -> torch.Tensor:
    ok = p > 0
    return torch.where(ok, torch.where(ok, p, torch.ones_like(p)).log(), torch.full_like(p, float("-inf")))


def graph_forward(y: torch.Tensor, lengths: torch.Tensor, graph: Graph, leaky_hmm: float = 0.0) -> torch.Tensor:
    """``log Z`` per utterance. ``y (B, T, P)`` pdf scores, ``lengths (B,)`` -> ``(B,)``.

    Graphs whose arcs' pdfs depend only on the destination state (all graphs built in
    :mod:`.lfmmi_graph`) run as a max-scaled ``(B, S) @ (S, S)`` product per frame; others as a
    scatter log-sum-exp over arcs. Both compute the same recursion.
    """
    require(y.size(-1) > int(graph.pdf.max()), f"graph uses pdf {int(graph.pdf.max())} but y has {y.size(-1)} outputs")
    g = graph.to(y.device)
    b, t_max, _ = y.shape
    s_n = g.num_states
    alpha = g.start.to(y.dtype).expand(b, -1)
    leak = math.log(leaky_hmm / s_n) if leaky_hmm > 0 else None
    dense = _dense_form(graph)
    if dense is not None:
        w_exp, state_pdf = dense[0].to(y.device, y.dtype), dense[1].to(y.device)
        emit = y[:, :, state_pdf]  # (B, T, S)
    else:
        w = g.weight.to(y.dtype)
    alphas = [alpha]
    for t in range(int(lengths.max()) if b else 0):
        if dense is not None:
            m = alpha.max(-1, keepdim=True).values.detach()
            alpha = m + _safe_log((alpha - m).exp() @ w_exp) + emit[:, t]
        else:
            alpha = _scatter_logsumexp(alpha[:, g.src] + w + y[:, t, g.pdf], g.dst, s_n)
        if leak is not None:
            alpha = torch.logaddexp(alpha, leak + alpha.logsumexp(-1, keepdim=True))
        alphas.append(alpha)
    # each utterance ends at its own length: frames beyond it never enter its score
    last = torch.stack(alphas, 1)[torch.arange(b, device=y.device), lengths.clamp(max=t_max)]
    return (last + g.final.to(y.dtype)).logsumexp(-1)


def occupancies(y: torch.Tensor, lengths: torch.Tensor, graph: Graph, leaky_hmm: float = 0.0) -> torch.Tensor:
    """Posterior pdf occupancies ``gamma (B, T, P)`` (rows sum to 1 on valid frames, 0 on padding)."""
    with torch.enable_grad():
        yy = y.detach().requires_grad_(True)
        (gamma,) = torch.autograd.grad(graph_forward(yy, lengths, graph, leaky_hmm).sum(), yy)
    return gamma


def greedy_labels(logp: torch.Tensor, length: int, blank: int = 0) -> Sequence[int]:
    """CTC 1-best of one utterance: argmax, merge repeats, drop blanks."""
    best = logp[:length].argmax(-1).tolist()
    return [k for i, k in enumerate(best) if k != blank and (i == 0 or best[i - 1] != k)]


class LFMMIKDLoss(nn.Module):
    """Modified LF-MMI prediction-layer distillation (DistillW2V2): ``L_pred = beta * MMI + (1 - beta) * MSE``.

    Args:
        den_graph: denominator :class:`Graph` over the shared output units (``0`` = blank).
        numerator: ``"soft"`` -- ``MMI = -sum_t sum_k gammaT_t(k) y_t(k) + log Z_den`` with the teacher's
            occupancies ``gammaT`` on the same graph (gradient ``gamma_den - gammaT``; no transcripts);
            ``"hard"`` -- ``MMI = -log Z_num + log Z_den`` with the numerator graph of the teacher's 1-best.
        beta: weight of MMI vs the logit MSE.
        leaky_hmm: leaky-HMM coefficient (0 = off).
        teacher_shift_ms, student_shift_ms: frame shifts; the teacher is pooled to the student's rate.
    Forward:
        ``student_logits (B, T, P)`` + ``(B,)``, ``teacher_logits (B, T', P)`` + ``(B,)`` ->
        ``(loss_sum, denom = valid student frames, stats)``. Scores are ``log_softmax`` of the logits.
    """

    def __init__(self, den_graph: Graph, numerator: str = "soft", beta: float = 0.8, leaky_hmm: float = 0.0,
                 teacher_shift_ms: float = 20.0, student_shift_ms: float = 40.0):
        super().__init__()
        require(numerator in ("soft", "hard"), f"numerator={numerator!r}: use 'soft' or 'hard'")
        require(0.0 <= beta <= 1.0, f"beta={beta}: must be in [0, 1]")
        ratio = student_shift_ms / teacher_shift_ms
        require(ratio >= 1 and abs(ratio - round(ratio)) < 1e-6, f"frame shifts teacher={teacher_shift_ms} ms, "
                f"student={student_shift_ms} ms: the student must be an integer multiple of the teacher")
        self.den_graph, self.numerator, self.beta, self.leaky = den_graph, numerator, beta, leaky_hmm
        self.ratio = int(round(ratio))

    def forward(self, student_logits: torch.Tensor, student_lengths: torch.Tensor, teacher_logits: torch.Tensor,
                teacher_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
        y = student_logits.float().log_softmax(-1)
        with torch.no_grad():
            ty = teacher_logits.float().log_softmax(-1)
            t_logp, t_len = match_frame_rate(ty, teacher_lengths, self.ratio, "pool")
            if self.numerator == "soft":
                gamma, _ = match_frame_rate(occupancies(ty, teacher_lengths, self.den_graph, self.leaky),
                                            teacher_lengths, self.ratio, "pool")
        n = min(y.size(1), t_logp.size(1))
        lens = torch.minimum(student_lengths, t_len).clamp(max=n)
        y = y[:, :n]
        mask = lengths_to_mask(lens, n)
        log_z_den = graph_forward(y, lens, self.den_graph, self.leaky)
        if self.numerator == "soft":
            num = (gamma[:, :n] * y * mask[..., None]).sum((1, 2))
        else:
            num = torch.stack([graph_forward(y[i : i + 1], lens[i : i + 1], ctc_num_graph(greedy_labels(t_logp[i], int(lens[i]))))[0]
                               for i in range(y.size(0))])
        mmi = (log_z_den - num).sum()
        mse = ((y - t_logp[:, :n]).pow(2).mean(-1) * mask).sum()  # MSE of the (log-normalised) logits
        total = self.beta * mmi + (1 - self.beta) * mse
        frames = lens.sum().clamp(min=1)
        return total, lens.sum(), {"lfmmi": (mmi / frames).item(), "lfmmi_mse": (mse / frames).item()}


class DistillW2V2Loss(nn.Module):
    """DistillW2V2's objective: ``L = (1 - alpha) * L_hidden + alpha * L_pred``.

    ``L_hidden``: :class:`~.layerwise.LayerwiseKDLoss` (MSE by default: ``l2_weight=1``);
    ``L_pred``: :class:`LFMMIKDLoss` on the prediction layer (``beta * MMI + (1 - beta) * MSE``).
    Both are per-frame means; the result is returned as ``(L * frames, frames, stats)``. Needs the
    teacher's and the student's prediction-layer logits over the same units (``needs_logits``).
    """

    needs_logits = True

    def __init__(self, teacher_dim: int, student_dim: int, teacher_layers: int, student_layers: int, den_graph: Graph,
                 layer_map: str = "", teacher_shift_ms: float = 20.0, student_shift_ms: float = 40.0,
                 alpha: float = 0.8, beta: float = 0.8, numerator: str = "soft", leaky_hmm: float = 0.0,
                 l1_weight: float = 0.0, l2_weight: float = 1.0, cos_weight: float = 0.0, heads: str = "linear"):
        super().__init__()
        from .layerwise import LayerwiseKDLoss

        require(0.0 <= alpha <= 1.0, f"alpha={alpha}: must be in [0, 1]")
        require(alpha == 1.0 or layer_map, "layer_map is required unless alpha=1 (prediction loss only)")
        self.alpha = alpha
        self.hidden = LayerwiseKDLoss(teacher_dim, student_dim, layer_map, teacher_layers, student_layers, teacher_shift_ms,
                                      student_shift_ms, l1_weight, l2_weight, cos_weight, heads) if alpha < 1 else None
        self.pred = LFMMIKDLoss(den_graph, numerator, beta, leaky_hmm, teacher_shift_ms, student_shift_ms)

    def forward(self, teacher_hidden, teacher_lengths, student_hidden, student_lengths, teacher_logits=None,
                student_logits=None):
        require(teacher_logits is not None and student_logits is not None,
                "LF-MMI KD needs prediction-layer logits from the teacher (a CTC fine-tuned teacher) and the student")
        require(teacher_logits.size(-1) == student_logits.size(-1), f"LF-MMI KD: teacher has {teacher_logits.size(-1)} "
                f"outputs, student {student_logits.size(-1)}; both need the same token list")
        p_sum, p_den, stats = self.pred(student_logits, student_lengths, teacher_logits, teacher_lengths)
        loss = self.alpha * p_sum / p_den.clamp(min=1)
        if self.hidden is not None:
            h_sum, h_den, h_stats = self.hidden(teacher_hidden, teacher_lengths, student_hidden, student_lengths)
            loss = loss + (1 - self.alpha) * h_sum / h_den.clamp(min=1)
            stats.update(h_stats)
        frames = student_lengths.sum()
        return loss * frames, frames, stats
