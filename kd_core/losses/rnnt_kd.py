"""RNN-T soft-target distillation over the collapsed output lattice (Panchapagesan et al., 2021).

A transducer's joint network gives, at every lattice node ``(t, u)`` (encoder frame ``t``, ``u`` reference
tokens emitted), a distribution over ``V`` outputs. Distilling all ``B * T * (U+1) * V`` probabilities is
what makes transducer KD expensive; the collapsed form keeps three per node::

    P~(t, u) = [ P(y_{u+1} | t, u),  P(blank | t, u),  1 - P(y_{u+1} | t, u) - P(blank | t, u) ]

(next reference token, blank, everything else; at ``u = U`` there is no next token and its probability is 0),
and the loss is ``sum over valid nodes of KL(P~_teacher(t, u) || P~_student(t, u))``, valid meaning
``t < T_b`` and ``u <= U_b`` for utterance ``b``.

Memory: the joint is evaluated ``t_chunk`` frames at a time, and of each ``(B, t_chunk, U+1, V)`` block only
the log-softmax normaliser (a logsumexp over ``V``) and two gathers (the next token's and blank's logit) are
kept, so the collapsed probabilities cost ``O(B * T * U)`` and the peak extra memory ``O(B * t_chunk * U * V)``.
In training the student's chunks are checkpointed (``torch.utils.checkpoint``: recomputed in backward), otherwise
autograd would keep every chunk's logits, ``O(B * T * U * V)`` again. The full-vocabulary KL (``full_vocab=True``,
for small ``V``) keeps whole distributions (and autograd their logits): ``O(B * T * U * V)``.
``python -m bench.rnnt_memory`` measures both against ``V`` (``bench/results/rnnt_memory.md``).
Losses return ``(sum, denominator = number of valid nodes, stats)`` like every loss of the core.

Unlike the hidden-state losses, this one reads lattices (:class:`TransducerLattice`): the teacher's comes from
:meth:`~kd_core.teachers.base.Teacher.transducer_lattice` (a transducer teacher: an ESPnet model with
``--decoder transducer`` or a core :class:`~kd_core.students.transducer.TransducerStudent`; CTC teachers are
refused there with one line, they teach transducer students through hard targets, :mod:`kd_core.pseudo_label`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import torch
from torch.utils.checkpoint import checkpoint

from ..errors import require

Joint = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``joint(enc (B, t, 1, H), pred (B, 1, U+1, H)) -> logits (B, t, U+1, V)``."""


@dataclass
class TransducerLattice:
    """What the collapsed KL reads of one model on one batch: its ``joint`` (:data:`Joint`), encoder output
    ``enc (B, T, H)`` with ``lengths (B,)``, and prediction-network output ``pred (B, U + 1, H')`` on the reference."""

    joint: Joint
    enc: torch.Tensor
    lengths: torch.Tensor
    pred: torch.Tensor


def node_mask(enc_lengths: torch.Tensor, target_lengths: torch.Tensor, t_max: int, u_max: int) -> torch.Tensor:
    """``(B, T, U+1)`` bool: node ``(t, u)`` lies in utterance ``b``'s lattice (``t < T_b``, ``u <= U_b``)."""
    t = torch.arange(t_max, device=enc_lengths.device)[None, :, None] < enc_lengths[:, None, None]
    u = torch.arange(u_max + 1, device=enc_lengths.device)[None, None, :] <= target_lengths[:, None, None]
    return t & u


def collapsed_log_probs(joint: Joint, enc: torch.Tensor, pred: torch.Tensor, targets: torch.Tensor,
                        target_lengths: torch.Tensor, blank: int, t_chunk: int = 16) -> torch.Tensor:
    """``(B, T, U+1, 3)`` log-probabilities of [next reference token, blank, rest] at every lattice node.

    Args:
        joint: the transducer's joint network (see :data:`Joint`).
        enc: ``(B, T, H_enc)`` encoder output; pred: ``(B, U+1, H_pred)`` prediction-network output (after
            the start symbol and each of the ``U`` targets); targets: ``(B, U)`` token ids (padding any value);
            target_lengths: ``(B,)``: from ``u = U_b`` on there is no next token (its probability is 0).
        blank: the blank id; t_chunk: frames of the joint evaluated at once.
    """
    b, t_max, _ = enc.shape
    u1 = pred.size(1)
    require(targets.size(1) == u1 - 1, f"rnnt kd: pred has {u1} steps but targets {targets.size(1)} tokens; need U + 1")
    has_next = torch.arange(u1, device=enc.device)[None, :] < target_lengths[:, None]  # (B, U+1)
    nxt = torch.cat([targets, targets.new_zeros(b, 1)], dim=1).long()
    nxt = torch.where(has_next, nxt, torch.full_like(nxt, blank))  # no next token: gather blank, masked below
    def collapse(enc_chunk: torch.Tensor, pred_all: torch.Tensor) -> torch.Tensor:
        logits = joint(enc_chunk[:, :, None, :], pred_all[:, None, :, :]).float()  # (B, t, U+1, V)
        lse = torch.logsumexp(logits, dim=-1)
        idx = nxt[:, None, :, None].expand(-1, logits.size(1), -1, 1)
        log_y = logits.gather(-1, idx).squeeze(-1) - lse
        log_y = log_y.masked_fill(~has_next[:, None, :], float("-inf"))
        log_b = logits[..., blank] - lse
        # rest = 1 - p_y - p_blank, from the logsumexp over the other classes (no cancellation)
        masked = logits.scatter(-1, idx, float("-inf"))
        masked[..., blank] = float("-inf")
        log_r = torch.logsumexp(masked, dim=-1) - lse
        return torch.stack([log_y, log_b, log_r], dim=-1)

    # with gradient, each chunk is checkpointed: autograd keeps its inputs and its (B, t, U+1, 3) output and
    # recomputes the chunk's joint during backward, so no (B, T, U+1, V) tensor is ever kept alive
    grad = torch.is_grad_enabled() and (enc.requires_grad or pred.requires_grad or any(
        p.requires_grad for p in getattr(joint, "parameters", lambda: [])()))
    out = []
    for s in range(0, t_max, t_chunk):
        if grad:
            out.append(checkpoint(collapse, enc[:, s:s + t_chunk], pred, use_reentrant=False))
        else:
            out.append(collapse(enc[:, s:s + t_chunk], pred))
    return torch.cat(out, dim=1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``sum_k p_k (log p_k - log q_k)`` over the last dim, with ``0 * log 0 = 0``."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


class CollapsedRNNTKDLoss(torch.nn.Module):
    """``sum over valid nodes of KL(P~_T || P~_S)`` (or the full-vocabulary KL with ``full_vocab=True``).

    Args:
        blank: blank id shared by teacher and student (their token lists must be the same).
        t_chunk: frames of each joint evaluation (memory, see the module doc).
        full_vocab: KL over all ``V`` outputs per node instead of the collapsed three.
    Forward:
        ``teacher_joint, teacher_enc (B, T, H_t), teacher_pred (B, U+1, H_t')``, the student's same three
        (same ``T``: the caller matches frame rates), ``targets (B, U)``, ``enc_lengths (B,)``,
        ``target_lengths (B,)`` -> ``(sum, denominator, stats)``. The teacher side runs without gradient.
    """

    needs_lattice = True  # the callers pass TransducerLattice pairs (:meth:`lattice_kd`), not hidden states

    def __init__(self, blank: int = 0, t_chunk: int = 16, full_vocab: bool = False):
        super().__init__()
        self.blank, self.t_chunk, self.full_vocab = int(blank), int(t_chunk), bool(full_vocab)

    def node_kl(self, teacher_joint: Joint, teacher_enc, teacher_pred, student_joint: Joint, student_enc, student_pred,
                targets, target_lengths) -> torch.Tensor:
        """``(B, T, U+1)`` KL at every node (padding nodes included; mask them)."""
        require(teacher_enc.shape[:2] == student_enc.shape[:2] and teacher_pred.shape[:2] == student_pred.shape[:2],
                f"rnnt kd: teacher lattice {tuple(teacher_enc.shape[:2])} x {teacher_pred.size(1)} != student "
                f"{tuple(student_enc.shape[:2])} x {student_pred.size(1)}; match frame rates and token lists first")
        if not self.full_vocab:
            with torch.no_grad():
                lt = collapsed_log_probs(teacher_joint, teacher_enc, teacher_pred, targets, target_lengths, self.blank,
                                         self.t_chunk)
            ls = collapsed_log_probs(student_joint, student_enc, student_pred, targets, target_lengths, self.blank,
                                     self.t_chunk)
            return _kl(lt, ls)
        parts = []
        for s in range(0, student_enc.size(1), self.t_chunk):
            with torch.no_grad():
                lt = teacher_joint(teacher_enc[:, s:s + self.t_chunk, None], teacher_pred[:, None]).float().log_softmax(-1)
            ls = student_joint(student_enc[:, s:s + self.t_chunk, None], student_pred[:, None]).float().log_softmax(-1)
            require(lt.size(-1) == ls.size(-1), f"rnnt kd: teacher has {lt.size(-1)} outputs, student {ls.size(-1)}; "
                    "soft targets need the same token list")
            parts.append(_kl(lt, ls))
        return torch.cat(parts, dim=1)

    def forward(self, teacher_joint: Joint, teacher_enc, teacher_pred, student_joint: Joint, student_enc, student_pred,
                targets, enc_lengths, target_lengths) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
        kl = self.node_kl(teacher_joint, teacher_enc, teacher_pred, student_joint, student_enc, student_pred, targets,
                          target_lengths)
        mask = node_mask(enc_lengths, target_lengths, kl.size(1), kl.size(2) - 1)
        total = kl.masked_fill(~mask, 0.0).sum()
        den = mask.sum().to(total.dtype)
        return total, den, {"rnnt_kl": float(total.detach() / den.clamp(min=1))}

    def lattice_kd(self, teacher: TransducerLattice, student: TransducerLattice, targets: torch.Tensor,
                   target_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
        """:meth:`forward` on two :class:`TransducerLattice` (same frames: the teacher's valid lengths must be the
        student's, else one line)."""
        require(torch.equal(teacher.lengths.cpu(), student.lengths.cpu()),
                f"rnnt kd: teacher frames {teacher.lengths.tolist()} != student frames {student.lengths.tolist()}; "
                "teacher and student transducers need the same frame rate (encoder subsampling)")
        return self(teacher.joint, teacher.enc, teacher.pred, student.joint, student.enc, student.pred, targets,
                    student.lengths, target_lengths)
