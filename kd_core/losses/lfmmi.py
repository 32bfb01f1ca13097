"""Pure-torch LF-MMI (no k2): batched log-semiring forward over an arc-list graph, the modified
LF-MMI prediction-layer loss of DistillW2V2 (:class:`LFMMIPredictionLoss`) and DistillW2V2's whole
KD objective, hidden layers + prediction layer (:class:`LFMMIKDLoss`, ``kd_loss: lfmmi``).

Forward recursion, per utterance (``y_t (P,)`` pdf scores, arcs ``e = (s_e, d_e, p_e, w_e)``)::

    alpha_0(s)   = start(s)
    alpha_t(d)   = logsumexp_{e: d_e = d} [alpha_{t-1}(s_e) + w_e + y_t(p_e)]      t = 1..T
    log Z        = logsumexp_s [alpha_T(s) + final(s)]

computed with a max-shifted log-sum-exp per destination state, so long inputs never overflow.
Each utterance's ``log Z`` is read at its own length, so padded frames never count. With ``leaky_hmm = c > 0`` every
step adds ``log(c / S) + logsumexp(alpha)`` to each of the ``S`` states (a leaky HMM as in Povey
et al. 2016, with a uniform restart distribution), letting paths restart anywhere. ``d log Z / d y_t(k)`` is the
posterior occupancy ``gamma_t(k)``: by autograd for numerator graphs, by an explicit forward-backward pass
(probability space, renormalised per frame, as in Kaldi's chain denominator) for denominator graphs.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import require
from ..streaming import frame_rate_ratio, lengths_to_mask
from .layerwise import match_frame_rate
from .lfmmi_graph import Graph, check_topology, num_graph, teacher_1best_sequences


def _safe_log(p: torch.Tensor) -> torch.Tensor:
    """``log p`` with ``-inf`` for ``p = 0`` and no ``0 * inf`` (NaN) in the gradient."""
    ok = p > 0
    return torch.where(ok, torch.where(ok, p, torch.ones_like(p)).log(), torch.full_like(p, float("-inf")))


def _scatter_logsumexp(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``values (B, E)``, ``index (E,)`` or ``(B, E)`` -> ``(B, size)`` log-sum-exp of the values per index."""
    b = values.size(0)
    idx = index.expand(b, -1)
    m = values.new_full((b, size), float("-inf")).scatter_reduce(1, idx, values, "amax", include_self=True)
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    s = values.new_zeros((b, size)).scatter_add(1, idx, (values - m_safe.gather(1, idx)).exp())
    return m_safe + _safe_log(s)


def _dense_form(g: Graph):
    """``(exp(W) (S, S), pdf of each state (S,))`` when every arc's pdf is fixed by its destination state
    and every state is final (the bigram denominator graphs of both topologies), else ``None``.

    The dense recursion rescales all states by one number per frame, so a state far below the best
    one underflows. That is harmless when any state may end the utterance and reach every token
    (denominator graphs), but not in a numerator graph, whose paths must all reach its last states:
    in float32 a forced alignment then drops to ``-inf``. Those graphs take the exact scatter path.
    """
    if "dense" not in g.cache:  # built once per graph, not at every training step
        state_pdf = torch.full((g.num_states,), -1, dtype=torch.long)
        state_pdf[g.dst] = g.pdf
        if not (torch.equal(state_pdf[g.dst], g.pdf) and bool(torch.isfinite(g.final).all())):
            g.cache["dense"] = None
        else:
            w = torch.zeros(g.num_states, g.num_states, dtype=torch.float64)
            w.index_put_((g.src, g.dst), g.weight.double().exp(), accumulate=True)
            g.cache["dense"] = (w, state_pdf.clamp(min=0))
    return g.cache["dense"]


def _scaled_forward(emit, lengths, w_exp, start, final, leak):
    """Dense forward in probability space, renormalised every frame (4 ops per frame):
    ``p_t = (P_{t-1} @ exp(W)) * exp(emit_t - max emit_t) / n_t``, ``P_t = p_t + c / S`` (the leak, as
    ``sum p_t = 1``; ``leak = c / S`` or ``None``), ``log Z = sum_t (log n_t + max emit_t) + log(P_len . exp(final))``.

    ``emit (T, B, S)``, ``lengths (B,)``, ``w_exp (S, S)``, ``start/final (S,)`` -> ``(log Z (B,),
    E = exp(emit - max) (T, B, S), p (T + 1, B, S))``, or ``None`` when a valid frame's mass fell to
    where float underflow loses precision (the caller then uses the exact scatter path).
    """
    t_max, b, s_n = emit.shape
    emax = emit.amax(-1, keepdim=True)
    e = (emit - emax).exp_()
    p = emit.new_empty(t_max + 1, b, s_n)
    n = emit.new_empty(t_max, b, 1)
    s0, f0 = start.max(), final.max()
    p[0] = (start - s0).exp()
    prev = p[0]
    for e_t, q, n_t in zip(e.unbind(0), p.unbind(0)[1:], n.unbind(0)):
        torch.mm(prev, w_exp, out=q).mul_(e_t)
        q.div_(torch.sum(q, -1, keepdim=True, out=n_t))
        prev = q if leak is None else q + leak
    ar = torch.arange(b, device=emit.device)
    last = p[lengths, ar]
    if leak is not None:
        last = torch.where((lengths > 0)[:, None], last + leak, last)
    end = (last * (final - f0).exp()).sum(-1)
    valid = torch.arange(t_max, device=emit.device)[:, None] < lengths  # (T, B)
    tiny = torch.finfo(emit.dtype).tiny / torch.finfo(emit.dtype).eps
    n = n.squeeze(-1)
    if not (bool((end >= tiny).all()) and bool(torch.where(valid, n >= tiny, True).all())):
        return None
    log_n = torch.cat([n.new_zeros(1, b), torch.where(valid, n.log() + emax.squeeze(-1), 0).cumsum(0)])
    return log_n[lengths, ar] + s0 + end.log() + f0, e, p


def _scaled_occupancy(e, p, lengths, w_exp, final, leak):
    """Backward of :func:`_scaled_forward`: ``r'_t = r_t + (c / S) sum r_t``, ``r_{t-1} = exp(W) @ (E_t * r'_t)``
    renormalised every frame from ``r_len = exp(final)``; ``gamma_t = p_t * r'_t / sum(p_t * r'_t)``
    (occupancies sum to one per valid frame, 0 elsewhere). ``(T, B, S)``, or ``None`` on underflow."""
    t_max, b, s_n = e.shape
    f_exp = (final - final.max()).exp()
    r = e.new_zeros(b, s_n)
    rs = []
    w_t = w_exp.t().contiguous()
    ends = set(lengths.tolist())
    tiny = torch.finfo(e.dtype).tiny / torch.finfo(e.dtype).eps
    for t in range(t_max - 1, -1, -1):
        if t + 1 in ends:  # each utterance's backward starts at its own length
            r = torch.where((lengths == t + 1)[:, None], f_exp, r)
        if leak is not None:
            r = r + leak * r.sum(-1, keepdim=True)
        rs.append(r)
        r = torch.mm(e[t] * r, w_t)
        r = r.div_(r.sum(-1, keepdim=True).clamp_(min=tiny))
    gamma = p[1:] * torch.stack(rs[::-1])
    z = gamma.sum(-1, keepdim=True)
    valid = (torch.arange(t_max, device=e.device)[:, None] < lengths)[..., None]  # (T, B, 1)
    if not bool(torch.where(valid, z >= tiny, True).all()):
        return None
    return torch.where(valid, gamma / z.clamp(min=tiny), 0)


def _arc_tensors(graphs: Sequence[Graph], b: int, device, dtype):
    """Per-utterance arc lists padded to ``(B, E_max)`` (padding arcs weigh ``-inf``), ``start/final (B, S_max)``.
    One graph is shared by all ``b`` utterances; a list gives each utterance its own graph."""
    if len(graphs) == 1:
        g = graphs[0]
        arcs = [x.to(device).expand(b, -1) for x in (g.src, g.dst, g.pdf)]
        return (*arcs, g.weight.to(device, dtype).expand(b, -1), g.start.to(device, dtype).expand(b, -1),
                g.final.to(device, dtype).expand(b, -1))
    e_max, s_max = max(g.src.numel() for g in graphs), max(g.num_states for g in graphs)
    idx = torch.zeros(3, b, e_max, dtype=torch.long)
    w = torch.full((b, e_max), float("-inf"))
    start, final = torch.full((b, s_max), float("-inf")), torch.full((b, s_max), float("-inf"))
    for i, g in enumerate(graphs):
        e, n = g.src.numel(), g.num_states
        idx[:, i, :e] = torch.stack([g.src, g.dst, g.pdf])
        w[i, :e], start[i, :n], final[i, :n] = g.weight, g.start, g.final
    return (*idx.to(device), *(x.to(device, dtype) for x in (w, start, final)))


def _scatter_forward(y: torch.Tensor, lengths: torch.Tensor, graphs: Sequence[Graph], leaky_hmm: float) -> torch.Tensor:
    """Exact log-space recursion over arc lists (max-shift per destination state), differentiated by
    autograd. ``y (B, T, P)``, ``lengths (B,)`` (``<= T``), one graph or one per utterance -> ``log Z (B,)``."""
    b = y.size(0)
    src, dst, pdf, w, start, final = _arc_tensors(graphs, b, y.device, y.dtype)
    s_n = start.size(1)
    leak = math.log(leaky_hmm / s_n) if leaky_hmm > 0 else None
    alpha = start
    alphas = [alpha]
    for t in range(int(lengths.max()) if b else 0):
        alpha = _scatter_logsumexp(alpha.gather(1, src) + w + y[:, t].gather(1, pdf), dst, s_n)
        if leak is not None:
            alpha = torch.logaddexp(alpha, leak + alpha.logsumexp(-1, keepdim=True))
        alphas.append(alpha)
    # each utterance ends at its own length: frames beyond it never enter its score
    last = torch.stack(alphas, 1)[torch.arange(b, device=y.device), lengths] + final
    m = last.amax(-1, keepdim=True).clamp(min=-1e30).detach()  # -inf (no path) keeps a zero gradient
    return m.squeeze(-1) + _safe_log((last - m).exp().sum(-1))


class _DenseForward(torch.autograd.Function):
    """``log Z`` of a dense-form graph with an explicit forward-backward gradient (no per-frame autograd
    graph): :func:`_scaled_forward` / :func:`_scaled_occupancy`, or the exact :func:`_scatter_forward`
    when float underflow would lose precision. ``d log Z / d y_t(k) = sum_{s: pdf(s) = k} gamma_t(s)``.
    ``eager``: the occupancies are computed in the forward pass and returned as a second, non-differentiable
    output ``(B, T, P)`` (the backward then only scales them)."""

    @staticmethod
    def forward(ctx, y, lengths, graph, dense, leaky_hmm, eager):
        # y (B, T, P), lengths (B,) <= T -> log Z (B,), pdf occupancies (B, T, P) (empty unless eager)
        w_exp, state_pdf = dense[0].to(y.device, y.dtype), dense[1].to(y.device)
        emit = y[:, :, state_pdf].transpose(0, 1).contiguous()  # (T, B, S)
        start, final = graph.start.to(y.device, y.dtype), graph.final.to(y.device, y.dtype)
        ctx.leak = leaky_hmm / w_exp.size(0) if leaky_hmm > 0 else None
        ctx.graph, ctx.leaky_hmm, ctx.dense, ctx.e, ctx.gamma = graph, leaky_hmm, (w_exp, state_pdf, final), None, None
        scaled = _scaled_forward(emit, lengths, w_exp, start, final, ctx.leak)
        if scaled is None:
            log_z = _scatter_forward(y, lengths, [graph], leaky_hmm)
        else:
            log_z, ctx.e, ctx.p = scaled
        if eager:
            ctx.gamma = _DenseForward.pdf_occupancy(ctx, y, lengths)
        ctx.save_for_backward(y, lengths)
        gamma = ctx.gamma if eager else y.new_zeros(0)
        ctx.mark_non_differentiable(gamma)
        return log_z, gamma

    @staticmethod
    def pdf_occupancy(ctx, y, lengths):
        """``gamma (B, T, P)`` from the scaled forward-backward, or by autograd through the exact recursion."""
        w_exp, state_pdf, final = ctx.dense
        gamma = None if ctx.e is None else _scaled_occupancy(ctx.e, ctx.p, lengths, w_exp, final, ctx.leak)
        ctx.e = ctx.p = None
        if gamma is None:
            with torch.enable_grad():
                yy = y.detach().requires_grad_(True)
                (grad_y,) = torch.autograd.grad(_scatter_forward(yy, lengths, [ctx.graph], ctx.leaky_hmm).sum(), yy)
            return grad_y
        return y.new_zeros(y.shape).index_add_(2, state_pdf, gamma.transpose(0, 1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z, _grad_gamma):
        y, lengths = ctx.saved_tensors
        gamma = ctx.gamma if ctx.gamma is not None else _DenseForward.pdf_occupancy(ctx, y, lengths)
        return gamma * grad_z[:, None, None], None, None, None, None, None


def graph_forward(y: torch.Tensor, lengths: torch.Tensor, graph: Union[Graph, Sequence[Graph]],
                  leaky_hmm: float = 0.0) -> torch.Tensor:
    """``log Z`` per utterance. ``y (B, T, P)`` pdf scores, ``lengths (B,)`` -> ``(B,)`` (``-inf``, with a
    zero gradient, when no path fits). ``graph``: one graph for all utterances, or a list of ``B``
    graphs, one per utterance (numerator graphs, run as one batch; no leaky HMM).

    Denominator graphs (see :func:`_dense_form`) run as a rescaled ``(B, S) @ (S, S)`` product per
    frame with an explicit forward-backward gradient; all others (numerator graphs) as the exact
    scatter log-sum-exp over arcs, differentiated by autograd. Both compute the same recursion.
    """
    return _graph_forward(y, lengths, graph, leaky_hmm, eager=False)[0]


def graph_forward_occupancy(y: torch.Tensor, lengths: torch.Tensor, graph: Graph,
                            leaky_hmm: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`graph_forward` plus the occupancies ``gamma (B, T, P)`` (detached; rows sum to 1 on valid
    frames, 0 elsewhere) from one forward-backward pass, which the gradient of ``log Z`` then reuses: one
    batch can hold rows that need a gradient and rows that only need occupancies."""
    log_z, gamma = _graph_forward(y, lengths, graph, leaky_hmm, eager=True)
    if gamma.numel() == 0 and y.numel():  # not a dense-form graph: occupancies by autograd
        gamma = occupancies(y, lengths, graph, leaky_hmm)
    return log_z, gamma


def _graph_forward(y, lengths, graph, leaky_hmm, eager):
    graphs = [graph] if isinstance(graph, Graph) else list(graph)
    b, t_max, _ = y.shape
    if b == 0:
        return y.new_zeros(0), y.new_zeros(0)
    require(len(graphs) in (1, b),
            f"graph_forward: {len(graphs)} graphs for a batch of {b}; pass one or one per utterance")
    require(len(graphs) == 1 or leaky_hmm == 0, "graph_forward: leaky_hmm needs one shared graph")
    top = max(int(g.pdf.max()) for g in graphs)
    require(y.size(-1) > top, f"graph uses pdf {top} but y has {y.size(-1)} outputs")
    lengths = lengths.to(y.device).long().clamp(min=0, max=t_max)
    t_used = int(lengths.max())
    y_used = y[:, :t_used]  # frames past every length get a zero gradient
    dense = _dense_form(graphs[0]) if len(graphs) == 1 else None
    if dense is None:
        return _scatter_forward(y_used, lengths, graphs, leaky_hmm), y.new_zeros(0)
    log_z, gamma = _DenseForward.apply(y_used, lengths, graphs[0], dense, float(leaky_hmm), eager)
    if eager and t_used < t_max:
        gamma = torch.cat([gamma, gamma.new_zeros(b, t_max - t_used, gamma.size(-1))], 1)
    return log_z, gamma


def occupancies(y: torch.Tensor, lengths: torch.Tensor, graph: Graph, leaky_hmm: float = 0.0) -> torch.Tensor:
    """Posterior pdf occupancies ``gamma (B, T, P)`` (rows sum to 1 on valid frames, 0 on padding)."""
    with torch.enable_grad():
        yy = y.detach().requires_grad_(True)
        (gamma,) = torch.autograd.grad(graph_forward(yy, lengths, graph, leaky_hmm).sum(), yy)
    return gamma


class LFMMIPredictionLoss(nn.Module):
    """Modified LF-MMI prediction-layer distillation (DistillW2V2): ``L_pred = beta * MMI + (1 - beta) * MSE``.

    Args:
        den_graph: denominator :class:`Graph` over the shared output units (``0`` = blank).
        numerator: ``"soft"`` -- ``MMI = -sum_t sum_k gammaT_t(k) y_t(k) + log Z_den`` with the teacher's
            occupancies ``gammaT`` on the same graph and frames (its probabilities averaged to the student's
            rate; computed in the same batched forward-backward as ``log Z_den``; gradient ``gamma_den - gammaT``;
            no transcripts);
            ``"hard"`` -- ``MMI = -log Z_num + log Z_den`` with the numerator graph of the teacher's 1-best
            (:func:`~.lfmmi_graph.teacher_1best_sequences` of the teacher at its own frame rate, in ``topology``;
            see :meth:`hard_sequences`).
        beta: weight of MMI vs the logit MSE.
        leaky_hmm: leaky-HMM coefficient (0 = off).
        teacher_shift_ms, student_shift_ms: frame shifts; the teacher's probabilities are averaged to the
            student's rate (``match_frame_rate(..., "prob")``: averaging log-probabilities would bury a CTC
            teacher's one-frame spikes under the blank frames next to them).
        topology: ``"ctc"`` or ``"2state"`` (see :mod:`.lfmmi_graph`); ``den_graph`` must be built with
            the same one (``cached_den_graph(..., topology=...)``).
    Forward:
        ``student_logits (B, T, P)`` + ``(B,)``, ``teacher_logits (B, T', P)`` + ``(B,)`` ->
        ``(loss_sum, denom = valid student frames, stats)``. Scores are ``log_softmax`` of the logits.
    """

    def __init__(self, den_graph: Graph, numerator: str = "soft", beta: float = 0.8, leaky_hmm: float = 0.0,
                 teacher_shift_ms: float = 20.0, student_shift_ms: float = 40.0, topology: str = "ctc"):
        super().__init__()
        require(numerator in ("soft", "hard"), f"numerator={numerator!r}: use 'soft' or 'hard'")
        self.topology = check_topology(topology)
        require(den_graph.topology in ("", topology), f"topology={topology!r} but the denominator graph is "
                f"{den_graph.topology!r}; build it with cached_den_graph(..., topology={topology!r})")
        require(0.0 <= beta <= 1.0, f"beta={beta}: must be in [0, 1]")
        self.den_graph, self.numerator, self.beta, self.leaky = den_graph, numerator, beta, leaky_hmm
        self.graph_vocab = int(den_graph.pdf.max()) + 1  # output units of the graph (the smoothed bigram reaches every token)
        self.ratio = frame_rate_ratio(teacher_shift_ms, student_shift_ms)

    def forward(self, student_logits: torch.Tensor, student_lengths: torch.Tensor, teacher_logits: torch.Tensor,
                teacher_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
        # the forward-backward recursion sums log-probabilities over thousands of arcs and frames: never in
        # fp16/bf16, whatever autocast the trainer runs the student under
        with torch.autocast(student_logits.device.type, enabled=False):
            return self._forward(student_logits, student_lengths, teacher_logits, teacher_lengths)

    def _forward(self, student_logits: torch.Tensor, student_lengths: torch.Tensor, teacher_logits: torch.Tensor,
                 teacher_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
        graph_vocab = self.graph_vocab
        require(student_logits.size(-1) == teacher_logits.size(-1) == graph_vocab, f"LF-MMI: the denominator graph covers "
                f"{graph_vocab} output units but the student has {student_logits.size(-1)} and the teacher "
                f"{teacher_logits.size(-1)}; the graph was built for another token list: rebuild it (delete its den_graph "
                "folder) with the teacher's token list")
        y = student_logits.float().log_softmax(-1)
        with torch.no_grad():
            t_full = teacher_logits.float().log_softmax(-1)
            t_logp, t_len = match_frame_rate(t_full, teacher_lengths, self.ratio, "prob")
        n = min(y.size(1), t_logp.size(1))
        lens = torch.minimum(student_lengths, t_len).clamp(max=n)
        y, t_logp = y[:, :n], t_logp[:, :n]
        mask = lengths_to_mask(lens, n)
        if self.numerator == "soft":  # student log Z and teacher occupancies: one batched forward-backward
            b = y.size(0)
            log_z, gamma = graph_forward_occupancy(torch.cat([y, t_logp]), torch.cat([lens, lens]), self.den_graph,
                                                   self.leaky)
            log_z_den, num = log_z[:b], (gamma[b:] * y * mask[..., None]).sum((1, 2))
        else:
            log_z_den = graph_forward(y, lens, self.den_graph, self.leaky)
            num = graph_forward(y, lens, [num_graph(seq, self.topology) for seq in self.hard_sequences(
                t_full, teacher_lengths, t_logp, lens)])
        mmi = (log_z_den - num).sum()
        mse = ((y - t_logp).pow(2).mean(-1) * mask).sum()  # MSE of the (log-normalised) logits
        total = self.beta * mmi + (1 - self.beta) * mse
        frames = lens.sum().clamp(min=1)
        return total, lens.sum(), {"lfmmi": (mmi / frames).item(), "lfmmi_mse": (mse / frames).item()}


    def hard_sequences(self, t_full, t_full_len, t_logp, lens) -> List[List[int]]:
        """The teacher's 1-best read at its own frame rate; where it does not fit in the student's frames
        (``len + repeats`` frames for ``ctc``, ``len`` for ``2state``), the 1-best of the averaged teacher."""
        fine = teacher_1best_sequences(t_full, t_full_len, self.topology)
        coarse = None
        out = []
        for i, seq in enumerate(fine):
            need = len(seq) + (sum(a == b for a, b in zip(seq, seq[1:])) if self.topology == "ctc" else 0)
            if need > int(lens[i]):
                coarse = coarse or teacher_1best_sequences(t_logp, lens, self.topology)
                seq = coarse[i]
            out.append(seq)
        return out


class LFMMIKDLoss(nn.Module):
    """``kd_loss: lfmmi``, DistillW2V2's objective: ``L = (1 - alpha) * L_hidden + alpha * L_pred``.

    ``L_hidden``: :class:`~.layerwise.LayerwiseKDLoss` (MSE by default: ``l2_weight=1``);
    ``L_pred``: :class:`LFMMIPredictionLoss` on the prediction layer (``beta * MMI + (1 - beta) * MSE``).
    Both are per-frame means; the result is returned as ``(L * frames, frames, stats)``. Needs the
    teacher's and the student's prediction-layer logits over the same units (``needs_logits``).
    ``topology`` (``"ctc"`` / ``"2state"``) is passed to :class:`LFMMIPredictionLoss`, ``target_norm`` to ``L_hidden``.
    """

    needs_logits = True

    def __init__(self, teacher_dim: int, student_dim: int, teacher_layers: int, student_layers: int, den_graph: Graph,
                 layer_map: str = "", teacher_shift_ms: float = 20.0, student_shift_ms: float = 40.0,
                 alpha: float = 0.8, beta: float = 0.8, numerator: str = "soft", leaky_hmm: float = 0.0,
                 l1_weight: float = 0.0, l2_weight: float = 1.0, cos_weight: float = 0.0, heads: str = "linear",
                 topology: str = "ctc", target_norm: bool = False):
        super().__init__()
        from .layerwise import LayerwiseKDLoss

        require(0.0 <= alpha <= 1.0, f"alpha={alpha}: must be in [0, 1]")
        require(alpha == 1.0 or layer_map, "layer_map is required unless alpha=1 (prediction loss only)")
        self.alpha = alpha
        self.hidden = LayerwiseKDLoss(teacher_dim, student_dim, layer_map, teacher_layers, student_layers, teacher_shift_ms,
                                      student_shift_ms, l1_weight, l2_weight, cos_weight, heads,
                                      target_norm=target_norm) if alpha < 1 else None
        self.pred = LFMMIPredictionLoss(den_graph, numerator, beta, leaky_hmm, teacher_shift_ms, student_shift_ms, topology)

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


@torch.no_grad()
def teacher_den_sequences(teacher, waves: Iterable[torch.Tensor], student_shift_ms: float, topology: str = "ctc",
                          batch_size: int = 8) -> List[List[int]]:
    """Label sequences for a denominator bigram without transcripts: the CTC teacher's 1-best.

    ``waves``: ``(S,)`` waveforms. The teacher's log-probabilities at its own frame rate are read with
    :func:`~.lfmmi_graph.teacher_1best_sequences` in ``topology`` (``student_shift_ms`` is only checked to
    be a multiple of the teacher's shift). Returns one token-id list per waveform.
    """
    from ..data import pad_batch

    frame_rate_ratio(teacher.frame_shift_ms, student_shift_ms)
    out: List[List[int]] = []
    batch: List[torch.Tensor] = []
    for wav in list(waves) + [None]:
        if wav is not None:
            batch.append(wav)
        if batch and (wav is None or len(batch) == batch_size):
            t_out = teacher(*pad_batch(batch))
            require(t_out.logits is not None, "den graph from teacher 1-best: the teacher has no CTC head; "
                    "use a CTC fine-tuned teacher or transcripts")
            out += teacher_1best_sequences(t_out.logits.float().log_softmax(-1), t_out.lengths, topology)
            batch = []
    return out
