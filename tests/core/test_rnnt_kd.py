"""Collapsed-lattice RNN-T KD: equals a per-node brute force on full joint outputs, zero iff the student is the
teacher, padding- and chunking-invariant, gradient to the student only; the full-vocabulary option likewise."""
import math

import pytest
import torch
from float_noise import assert_float_noise_close

from kd_core.errors import KDConfigError
from kd_core.losses.rnnt_kd import CollapsedRNNTKDLoss

V, H, BLANK = 7, 8, 0


class Joint(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(H, V, generator=g))

    def forward(self, enc, pred):
        return torch.tanh(enc + pred) @ self.w


def _lattice(seed, b=3, t=6, u=4):
    g = torch.Generator().manual_seed(seed)
    enc, pred = torch.randn(b, t, H, generator=g), torch.randn(b, u + 1, H, generator=g)
    targets = torch.randint(1, V, (b, u), generator=g)
    return enc, pred, targets, torch.tensor([t, t - 2, 3])[:b], torch.tensor([u, 2, 0])[:b]


def _brute(tj, sj, enc_t, pred_t, enc_s, pred_s, targets, tl, ul, full):
    total, nodes = 0.0, 0
    for b in range(enc_t.size(0)):
        for t in range(int(tl[b])):
            for u in range(int(ul[b]) + 1):
                pt = tj(enc_t[b, t], pred_t[b, u]).double().softmax(-1)
                ps = sj(enc_s[b, t], pred_s[b, u]).double().softmax(-1)
                if not full:
                    y = int(targets[b, u]) if u < int(ul[b]) else None
                    col = lambda p: torch.stack([p[y] if y is not None else p.new_zeros(()), p[BLANK],
                                                 1 - (p[y] if y is not None else 0) - p[BLANK]])
                    pt, ps = col(pt), col(ps)
                total += float(sum(a * math.log(a / c) for a, c in zip(pt.tolist(), ps.tolist()) if a > 0))
                nodes += 1
    return total, nodes


@pytest.mark.parametrize("full", [False, True])
def test_equals_per_node_brute_force_with_padding(full):
    enc, pred, targets, tl, ul = _lattice(0)
    enc_s, pred_s = enc + 0.3 * torch.randn_like(enc), pred + 0.3 * torch.randn_like(pred)
    tj, sj = Joint(1), Joint(2)
    total, den, stats = CollapsedRNNTKDLoss(BLANK, t_chunk=4, full_vocab=full)(tj, enc, pred, sj, enc_s, pred_s, targets, tl, ul)
    with torch.no_grad():
        ref, nodes = _brute(tj, sj, enc, pred, enc_s, pred_s, targets, tl, ul, full)
    assert int(den) == nodes == sum((int(t) * (int(u) + 1)) for t, u in zip(tl, ul))
    assert total.item() == pytest.approx(ref, rel=1e-5) and stats["rnnt_kl"] == pytest.approx(ref / nodes, rel=1e-5)


def test_zero_iff_student_is_teacher_and_gradient_reaches_the_student_only():
    enc, pred, targets, tl, ul = _lattice(3)
    tj, sj = Joint(1), Joint(1)
    loss = CollapsedRNNTKDLoss(BLANK)
    assert loss(tj, enc, pred, sj, enc, pred, targets, tl, ul)[0].abs().item() < 1e-6
    with torch.no_grad():
        sj.w.add_(0.3 * torch.randn(H, V, generator=torch.Generator().manual_seed(9)))  # (a constant shift is softmax-invariant)
    total = loss(tj, enc, pred, sj, enc, pred, targets, tl, ul)[0]
    assert total.item() > 1e-3
    total.backward()
    assert sj.w.grad is not None and sj.w.grad.abs().sum() > 0 and tj.w.grad is None


def test_padding_and_chunking_invariant():
    """Each utterance's KL is the same alone as in a padded batch, and whatever ``t_chunk`` is."""
    enc, pred, targets, tl, ul = _lattice(5)
    enc_s, pred_s = enc.flip(-1), pred.roll(1, -1)
    tj, sj = Joint(1), Joint(2)
    batched = CollapsedRNNTKDLoss(BLANK, t_chunk=16)(tj, enc, pred, sj, enc_s, pred_s, targets, tl, ul)[0]
    alone = sum(CollapsedRNNTKDLoss(BLANK, t_chunk=1)(tj, enc[b:b + 1, :tl[b]], pred[b:b + 1, :ul[b] + 1], sj,
                                                       enc_s[b:b + 1, :tl[b]], pred_s[b:b + 1, :ul[b] + 1],
                                                       targets[b:b + 1, :ul[b]], tl[b:b + 1], ul[b:b + 1])[0]
                for b in range(3))
    assert_float_noise_close(batched, alone, width=V, depth=4, what="sum of per-utterance KL")


def test_mismatched_lattices_are_one_line():
    enc, pred, targets, tl, ul = _lattice(0)
    with pytest.raises(KDConfigError, match="match frame rates and token lists"):
        CollapsedRNNTKDLoss(BLANK)(Joint(1), enc, pred, Joint(2), enc[:, :-1], pred, targets, tl, ul)
