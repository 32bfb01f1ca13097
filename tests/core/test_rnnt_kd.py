"""Collapsed-lattice RNN-T KD: equals a per-node brute force on full joint outputs, zero iff the student is the
teacher, padding- and chunking-invariant, gradient to the student only; the full-vocabulary option likewise."""
import copy
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


def _transducers(vocab_t=V, vocab_s=V):
    from kd_core.students.transducer import TransducerStudent

    conf = dict(frontend="fbank", frontend_conf=dict(n_mels=40, channels=8), d_model=32, num_layers=2, num_heads=4,
                ffn_dim=64, conv_kernel=5, dropout=0.0)
    torch.manual_seed(0)
    teacher = TransducerStudent(vocab_t, chunk_size=0, **conf)  # non-streaming teacher
    student = TransducerStudent(vocab_s, chunk_size=3, **conf)
    return teacher, student


def _batch():
    g = torch.Generator().manual_seed(7)
    wav, lens = 0.1 * torch.randn(2, 8000, generator=g), torch.tensor([8000, 5000])
    y, yl = torch.randint(1, V, (2, 4), generator=g), torch.tensor([4, 2])
    return wav, lens, y, yl


def test_distiller_soft_targets_between_transducers():
    """Distiller(kd_loss="rnnt") between a non-streaming transducer teacher and a streaming transducer student: its KD
    term is the collapsed KL of the two lattices, its transducer term the student's own loss, and a student identical
    to its teacher has zero KD."""
    from kd_core.distiller import Distiller
    from kd_core.teachers.student_teacher import StudentTeacher

    teacher, student = _transducers()
    wav, lens, y, yl = _batch()
    dist = Distiller(StudentTeacher(teacher), student, kd_loss="rnnt", rnnt_weight=0.5, kd_weight=1.0)
    total, den, stats = dist(wav, lens, y, yl)
    with torch.no_grad():
        t_out, s_out = teacher(wav, lens), student(wav, lens)
        kl, nodes, _ = CollapsedRNNTKDLoss(0)(teacher.joiner, t_out.hidden[-1], teacher.predict(y), student.joiner,
                                              s_out.hidden[-1], student.predict(y), y, s_out.lengths, yl)
        r_sum, r_den, _ = student.loss(s_out.hidden[-1], s_out.lengths, y, yl)
    assert stats["kd"] == pytest.approx(float(kl / nodes), rel=1e-5) and stats["rnnt"] == pytest.approx(float(r_sum / r_den), rel=1e-5)
    assert int(den) == 2 and float(total / den) == pytest.approx(float(kl / nodes + 0.5 * r_sum / r_den), rel=1e-5)
    total.backward()
    assert student.joiner.out.weight.grad.abs().sum() > 0 and teacher.joiner.out.weight.grad is None
    twin = copy.deepcopy(teacher)
    assert Distiller(StudentTeacher(teacher), twin, kd_loss="rnnt")(wav, lens, y, yl)[2]["kd"] < 1e-6


def test_rnnt_kd_refuses_a_ctc_teacher_a_ctc_student_and_another_vocabulary():
    from kd_core.distiller import Distiller
    from kd_core.students.model import student_tiny
    from kd_core.teachers.student_teacher import StudentTeacher

    teacher, student = _transducers()
    ctc = StudentTeacher(student_tiny(num_layers=2, chunk_size=0, vocab_size=V))
    with pytest.raises(KDConfigError, match="need a transducer teacher.*hard targets"):
        Distiller(ctc, student, kd_loss="rnnt")
    with pytest.raises(KDConfigError, match="student has no transducer decoder"):
        Distiller(StudentTeacher(teacher), student_tiny(num_layers=2, chunk_size=3, vocab_size=V), kd_loss="rnnt")
    other = _transducers(vocab_s=V + 2)[1]
    with pytest.raises(KDConfigError, match="vocabulary mismatch.*7 outputs.*9"):
        Distiller(StudentTeacher(teacher), other, kd_loss="rnnt")
