"""Distiller: teacher + student + KD + CTC with a real (tiny fairseq HuBERT) teacher."""
import pytest
import torch

from kd_core.distiller import Distiller
from kd_core.errors import KDConfigError
from kd_core.students import student_tiny
from kd_core.teachers import load_teacher

WAV = torch.randn(3, 12000, generator=torch.Generator().manual_seed(1))
LENS = torch.tensor([12000, 9000, 5000])
Y = torch.tensor([[1, 2, 3], [4, 5, 0], [6, 0, 0]])
YL = torch.tensor([3, 2, 1])


@pytest.fixture(scope="module")
def teacher(tiny_teachers):
    return load_teacher("fairseq", str(tiny_teachers["fairseq_hubert"]))


def _dist(teacher, **kw):
    torch.manual_seed(0)
    conf = dict(layer_map="1:1,3:2", ctc_weight=0.5)
    conf.update(kw)
    return Distiller(teacher, student_tiny(num_layers=2, chunk_size=3, vocab_size=8), **conf)


def test_loss_is_batch_independent(teacher):
    """KD sum over a padded batch == sum over the utterances alone (teacher exact, losses masked)."""
    dist = _dist(teacher).eval()
    s, d, stats = dist(WAV, LENS, Y, YL)
    assert int(d) == 3 and torch.isfinite(s) and {"kd", "ctc", "loss"} <= set(stats)

    def kd_sum(w, n):
        t, st = teacher(w, n), dist.student(w, n)
        return dist.kd(t.hidden, t.lengths, st.hidden, st.lengths)[0]

    alone = sum(kd_sum(WAV[i : i + 1, : LENS[i]], LENS[i : i + 1]) for i in range(3))
    torch.testing.assert_close(kd_sum(WAV, LENS), alone, rtol=1e-5, atol=1e-4)


def test_gradients_and_checkpoint_contents(teacher):
    dist = _dist(teacher).train()
    assert not teacher.training  # .train() on the distiller leaves the teacher in eval mode
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    opt = torch.optim.SGD([p for p in dist.parameters() if p.requires_grad], lr=0.1)
    s, d, _ = dist(WAV, LENS, Y, YL)
    (s / d).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert dist.kd.heads[0].weight.grad.abs().sum() > 0 and dist.student.ctc.weight.grad.abs().sum() > 0
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    keys = dist.trainable_state_dict().keys()
    assert keys and not any(k.startswith("teacher.") for k in keys) and any(k.startswith("kd.heads") for k in keys)


def test_precomputed_targets_equal_online(teacher):
    dist = _dist(teacher).eval()
    online = dist(WAV, LENS, Y, YL)[0]
    cached = dist(WAV, LENS, Y, YL, teacher_out=teacher(WAV, LENS))[0]
    torch.testing.assert_close(online, cached)


def test_scratch_never_runs_teacher(teacher):
    dist = _dist(teacher, kd_weight=0.0, ctc_weight=1.0)
    calls = []
    h = teacher.register_forward_hook(lambda *a: calls.append(1))
    try:
        s, d, stats = dist(WAV, LENS, Y, YL)
    finally:
        h.remove()
    assert not calls and "kd" not in stats and torch.isfinite(s)


def test_config_errors(teacher):
    with pytest.raises(KDConfigError, match="teacher layer 7 out of range; the teacher has layers 0..3"):
        _dist(teacher, layer_map="7:1")
    with pytest.raises(KDConfigError, match="sample rates differ: teacher 16000 Hz, student 8000 Hz"):
        Distiller(teacher, student_tiny(num_layers=2, sample_rate=8000), layer_map="3:2")
    with pytest.raises(KDConfigError, match="ctc_weight>0 but the student has no CTC head"):
        Distiller(teacher, student_tiny(num_layers=2), layer_map="3:2", ctc_weight=1.0)
