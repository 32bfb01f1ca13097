"""bf16 autocast around a KD step (a user's ``torch.autocast``, ESPnet ``--use_amp``): the teacher and the LF-MMI
recursion run in fp32 whatever the outer autocast, so their results equal fp32's; the whole step (the student in bf16)
stays within bf16 rounding of the fp32 step."""
import pytest
import torch

from kd_core.distiller import Distiller
from kd_core.losses.lfmmi import LFMMIPredictionLoss
from kd_core.losses.lfmmi_graph import cached_den_graph
from kd_core.students import student_tiny
from kd_core.teachers import load_teacher

WAV = torch.randn(3, 12000, generator=torch.Generator().manual_seed(1))
LENS = torch.tensor([12000, 9000, 5000])
Y = torch.tensor([[1, 2, 3], [4, 5, 0], [6, 0, 0]])
YL = torch.tensor([3, 2, 1])
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def ctc_teacher(tiny_teachers):
    return load_teacher("fairseq", str(tiny_teachers["fairseq_w2v2_ctc"]))


def test_teacher_targets_ignore_an_outer_autocast(ctc_teacher):
    ref = ctc_teacher(WAV, LENS)
    with torch.autocast(**BF16):
        got = ctc_teacher(WAV, LENS)
    assert all(torch.equal(a, b) for a, b in zip(got.hidden, ref.hidden)) and torch.equal(got.logits, ref.logits)


def test_lfmmi_recursion_runs_in_fp32_under_autocast():
    den = cached_den_graph([[1, 2, 3], [3, 4], [2, 2, 5]], 7)
    loss = LFMMIPredictionLoss(den, teacher_shift_ms=40.0, student_shift_ms=40.0)
    g = torch.Generator().manual_seed(0)
    student = (3 * torch.randn(2, 30, 7, generator=g)).requires_grad_(True)
    teacher, lens = 3 * torch.randn(2, 30, 7, generator=g), torch.tensor([30, 21])
    ref, _, _ = loss(student, lens, teacher, lens)
    (ref_grad,) = torch.autograd.grad(ref, student)
    with torch.autocast(**BF16):
        got, _, _ = loss(student, lens, teacher, lens)
    (grad,) = torch.autograd.grad(got, student)
    assert got.dtype == torch.float32
    # the same fp32 operations on the same inputs in one process: bitwise equal (a recursion left to autocast runs its
    # matrix products in bf16 and moves the loss by ~2e-5 relative here)
    assert torch.equal(got, ref) and torch.equal(grad, ref_grad)


@pytest.mark.parametrize("kd_loss", ["layerwise", "lfmmi"])
def test_autocast_kd_step_is_the_fp32_step_within_bf16_rounding(ctc_teacher, kd_loss):
    v = ctc_teacher.vocab_size
    torch.manual_seed(0)
    dist = Distiller(ctc_teacher, student_tiny(num_layers=2, chunk_size=3, vocab_size=v), kd_loss=kd_loss, layer_map="1:1,3:2",
                     ctc_weight=0.5, den_graph=lambda: cached_den_graph([[1, 2, 3], [3, 4], [2, 2, 5]], v)).train()
    params = [p for p in dist.parameters() if p.requires_grad]

    def step(autocast: bool):
        with torch.autocast(**BF16, enabled=autocast):
            s, d, stats = dist(WAV, LENS, Y, YL)
        grads = torch.autograd.grad(s / d, params)
        return float(s / d), torch.cat([g.flatten() for g in grads]), stats

    loss32, grad32, stats32 = step(False)
    loss16, grad16, stats16 = step(True)
    assert loss16 == pytest.approx(loss32, rel=3e-2)  # bf16 keeps 8 bits of mantissa: ~0.4 % per op, a few ops deep
    cosine = float(torch.nn.functional.cosine_similarity(grad16, grad32, dim=0))
    assert cosine > 0.99, cosine
    assert stats16["kd"] == pytest.approx(stats32["kd"], rel=3e-2)
