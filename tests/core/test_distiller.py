"""Distiller: teacher + student + KD + CTC with a real (tiny fairseq HuBERT) teacher."""
import pytest
import torch
from float_noise import assert_float_noise_close

from kd_core.distiller import Distiller, kd_term
from kd_core.errors import KDConfigError
from kd_core.losses.lfmmi_graph import cached_den_graph
from kd_core.losses.registry import KD_LOSSES
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
    # per-frame terms carry the rounding of the tiny teacher and student (128 wide, 16 + 16 deep), relative to the sum
    assert_float_noise_close(kd_sum(WAV, LENS), alone, width=128, depth=32, what="KD sum batched vs alone")


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


@pytest.fixture(scope="module")
def ctc_teacher(tiny_teachers):
    return load_teacher("fairseq", str(tiny_teachers["fairseq_w2v2_ctc"]))


@pytest.fixture(scope="module")
def hubert_teacher(tiny_teachers):
    return load_teacher("fairseq", str(tiny_teachers["fairseq_hubert"]))


@pytest.mark.parametrize("name", sorted(set(KD_LOSSES) - {"rnnt"}))
def test_distiller_takes_every_registered_loss(ctc_teacher, hubert_teacher, name):
    """The README's core in five lines works with any --kd_loss: the loss is built by the registry (method
    defaults from the loss class), gets the logits it needs, and its own parameters receive gradients.
    (hubert_disc distils a pre-trained HuBERT: its codebook; the others a CTC teacher; rnnt needs transducers on
    both sides: tests/core/test_rnnt_kd.py::test_distiller_soft_targets_between_transducers.)"""
    if name == "hubert_disc":
        ctc_teacher = hubert_teacher
    v = ctc_teacher.vocab_size or 9
    torch.manual_seed(0)
    student = student_tiny(num_layers=2, chunk_size=3, vocab_size=v)
    den = lambda: cached_den_graph([[1, 2, 3], [3, 4], [2, 2, 5]], v)  # noqa: E731
    dist = Distiller(ctc_teacher, student, kd_loss=name, layer_map="1:1,3:2", ctc_weight=0.5, den_graph=den).train()
    assert type(dist.kd) is KD_LOSSES[name]
    s, d, stats = dist(WAV, LENS, Y, YL)
    assert int(d) == 3 and torch.isfinite(s)
    expected_keys = {"layerwise": "kd_l1_t1s1", "aux_apc": "aux_l1_t1s1", "lfmmi": "lfmmi", "hubert_disc": "kd_disc"}[name]
    assert {"kd", "ctc", "loss", expected_keys} <= set(stats), sorted(stats)
    # kd_objective's KD term is the loss's own mean (with both models' logits for prediction-layer KD)
    with torch.no_grad():
        dist.eval()
        t, st = ctc_teacher(WAV, LENS), dist.student(WAV, LENS)
        mean, _ = kd_term(dist.kd, t, st.hidden, st.lengths, st.logits)
        _, _, stats_eval = dist(WAV, LENS, Y, YL)
    assert stats_eval["kd"] == pytest.approx(float(mean), rel=1e-5)
    dist.train()
    (s / d).backward()
    own = [p for p in dist.kd.parameters()]
    assert own and any(p.grad is not None and p.grad.abs().sum() > 0 for p in own)


def test_hubert_disc_refuses_a_fine_tuned_teacher_with_the_option(ctc_teacher):
    student = student_tiny(num_layers=2, chunk_size=3, vocab_size=ctc_teacher.vocab_size)
    with pytest.raises(KDConfigError, match="teacher_path.*no HuBERT codebook.*pre-trained"):
        Distiller(ctc_teacher, student, kd_loss="hubert_disc", layer_map="1:1,3:2")


def test_method_defaults_come_from_the_loss(ctc_teacher):
    """No option given: the Distiller's loss has the class's defaults (one source of truth per method)."""
    import inspect

    student = student_tiny(num_layers=2, chunk_size=3, vocab_size=ctc_teacher.vocab_size)
    dist = Distiller(ctc_teacher, student, kd_loss="aux_apc", layer_map="1:1")
    assert dist.kd.k == inspect.signature(KD_LOSSES["aux_apc"]).parameters["apc_shift"].default
    with pytest.raises(KDConfigError, match="loss_conf heads: not an option of kd_loss aux_apc"):
        Distiller(ctc_teacher, student, kd_loss="aux_apc", layer_map="1:1", heads="linear")


def test_ctc_reads_only_labelled_utterances_and_kd_reads_all(ctc_teacher):
    """Semi-supervised KD (``labelled`` mask): the CTC term is the mean over the labelled utterances alone (equal to
    running CTC on that sub-batch), the KD term still reads the whole batch, and a batch without labels has KD only."""
    from kd_core.distiller import ctc_loss_sum, kd_objective

    torch.manual_seed(0)
    student = student_tiny(num_layers=2, chunk_size=3, vocab_size=ctc_teacher.vocab_size).eval()
    dist = Distiller(ctc_teacher, student, layer_map="1:1,3:2", ctc_weight=1.0).eval()
    with torch.no_grad():
        t, st = ctc_teacher(WAV, LENS), student(WAV, LENS)
        mask = torch.tensor([True, False, True])
        _, _, part = kd_objective(dist.kd, st, t, 1.0, 1.0, Y, YL, labelled=mask)
        _, _, whole = kd_objective(dist.kd, st, t, 1.0, 1.0, Y, YL)
        sub = ctc_loss_sum(st.logits[mask], st.lengths[mask], Y[mask], YL[mask])
        _, _, none = kd_objective(dist.kd, st, t, 1.0, 1.0, Y, YL, labelled=torch.zeros(3, dtype=torch.bool))
    assert part["ctc"] == pytest.approx(float(sub[0] / sub[1]), rel=1e-6) and part["ctc"] != pytest.approx(whole["ctc"], rel=1e-3)
    assert part["kd"] == whole["kd"] == none["kd"]
    assert "ctc" not in none and none["loss"] == pytest.approx(none["kd"], rel=1e-6)
