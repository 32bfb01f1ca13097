"""Layer-to-layer KD loss: masking, batching, frame rates, heads, layer maps."""
import pytest
import torch
import torch.nn.functional as F

from kd_core.errors import KDConfigError
from kd_core.losses import LayerwiseKDLoss, match_frame_rate, parse_layer_map


def _rand_hidden(layers, b, t, d, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, t, d, generator=g) for _ in range(layers + 1)]


def _loss(**kw):
    torch.manual_seed(0)
    conf = dict(teacher_dim=12, student_dim=8, layer_map="2:1,4:2", teacher_layers=4, student_layers=2,
                teacher_shift_ms=20, student_shift_ms=40, l1_weight=1.0, l2_weight=0.5, cos_weight=1.0)
    conf.update(kw)
    return LayerwiseKDLoss(**conf)


@pytest.mark.parametrize("rate_mode", ["pool", "stack"])
def test_padding_does_not_change_loss(rate_mode):
    loss = _loss(rate_mode=rate_mode)
    th, sh = _rand_hidden(4, 2, 20, 12, 1), _rand_hidden(2, 2, 10, 8, 2)
    tl, sl = torch.tensor([20, 13]), torch.tensor([10, 6])
    ref_sum, ref_den, _ = loss(th, tl, sh, sl)
    # pad with garbage: 7 more teacher frames and 3 more student frames
    th2 = [torch.cat([h, 1e3 * torch.randn(2, 7, 12)], 1) for h in th]
    sh2 = [torch.cat([h, 1e3 * torch.randn(2, 3, 8)], 1) for h in sh]
    for h in th2:  # also garbage inside row 1's padded region
        h[1, 13:] = 1e3
    s2, d2, _ = loss(th2, tl, sh2, sl)
    torch.testing.assert_close(s2, ref_sum)
    assert int(d2) == int(ref_den) == 10 + 6


def test_batch_sum_equals_sum_of_utterances():
    loss = _loss()
    th, sh = _rand_hidden(4, 3, 16, 12, 3), _rand_hidden(2, 3, 8, 8, 4)
    tl, sl = torch.tensor([16, 9, 12]), torch.tensor([8, 4, 6])
    s, d, _ = loss(th, tl, sh, sl)
    parts = [loss([h[i : i + 1, : tl[i]] for h in th], tl[i : i + 1], [h[i : i + 1, : sl[i]] for h in sh], sl[i : i + 1]) for i in range(3)]
    torch.testing.assert_close(s, sum(p[0] for p in parts), rtol=1e-5, atol=1e-5)
    assert int(d) == sum(int(p[1]) for p in parts)


def test_formula_on_identity_heads():
    """With heads=none and student == pooled teacher the L1/L2 terms vanish and cos = 1."""
    loss = _loss(student_dim=12, heads="none", layer_map={4: 2}, l2_weight=1.0)
    th = _rand_hidden(4, 1, 10, 12, 5)
    pooled = th[4].reshape(1, 5, 2, 12).mean(2)
    sh = [torch.zeros(1, 5, 12), torch.zeros(1, 5, 12), pooled]
    s, d, stats = loss(th, torch.tensor([10]), sh, torch.tensor([5]))
    assert int(d) == 5
    torch.testing.assert_close(s, 5 * -F.logsigmoid(torch.tensor(1.0)))
    assert stats["kd_l1_t4s2"] == pytest.approx(0.0, abs=1e-6) and stats["kd_cos_t4s2"] == pytest.approx(1.0)


def test_stack_and_pool():
    x = torch.arange(12.0).reshape(1, 6, 2)
    p, pl = match_frame_rate(x, torch.tensor([5]), 2, "pool")
    torch.testing.assert_close(p, torch.tensor([[[1.0, 2.0], [5.0, 6.0], [9.0, 10.0]]]))
    assert pl.tolist() == [2]  # only complete groups of valid frames
    s, _ = match_frame_rate(x, torch.tensor([6]), 2, "stack")
    assert s.shape == (1, 3, 4) and s[0, 1].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert _loss(rate_mode="stack").heads[0].out_features == 24


def test_faster_student_is_pooled():
    """A student twice as fast as the teacher: pairs of its (projected) frames are averaged, then compared;
    an odd last frame and frames beyond the shorter side do not count."""
    from kd_core.losses.layerwise import masked_layer_loss

    loss = _loss(teacher_shift_ms=40, student_shift_ms=20, teacher_dim=8, heads="none")
    th, sh = _rand_hidden(4, 1, 5, 8, 1), _rand_hidden(2, 1, 10, 8, 2)
    s, d, _ = loss(th, torch.tensor([5]), sh, torch.tensor([9]))  # 9 student frames -> 4 pooled
    expected = sum(masked_layer_loss(sh[si][:, :8].reshape(1, 4, 2, 8).mean(2), th[ti][:, :4], torch.ones(1, 4, dtype=torch.bool),
                                     1.0, 0.5, 1.0)[0] for ti, si in [(2, 1), (4, 2)])
    assert int(d) == 4
    torch.testing.assert_close(s, expected)


def test_gradients_reach_student_and_heads_only():
    loss = _loss()
    th = _rand_hidden(4, 2, 8, 12, 1)
    sh = [h.requires_grad_() for h in _rand_hidden(2, 2, 4, 8, 2)]
    s, _, _ = loss(th, torch.tensor([8, 8]), sh, torch.tensor([4, 2]))
    s.backward()
    assert sh[1].grad.abs().sum() > 0 and sh[0].grad is None
    assert sh[1].grad[1, 2:].abs().sum() == 0  # padded frames get no gradient


@pytest.mark.parametrize("spec,msg", [("13:2", "teacher layer 13 out of range"), ("4:3", "student layer 3 out of range"),
                                      ("four:two", "expected 'teacher:student"), ("", "pairs")])
def test_layer_map_errors(spec, msg):
    with pytest.raises(KDConfigError, match=msg) as e:
        parse_layer_map(spec, teacher_layers=12, student_layers=2)
    assert "\n" not in str(e.value) and "layer_map" in str(e.value)


def test_parse_forms_agree():
    assert parse_layer_map("4:2, 8:4", 12, 6) == parse_layer_map({4: 2, 8: 4}, 12, 6) == parse_layer_map([[4, 2], [8, 4]], 12, 6)


def test_dimension_mismatch_without_heads():
    with pytest.raises(KDConfigError, match="heads=none: student dim 8 != teacher target dim 12"):
        _loss(heads="none")
    with pytest.raises(KDConfigError, match="student=30 ms: the student.s must be an integer multiple or fraction"):
        _loss(teacher_shift_ms=20, student_shift_ms=30)


def test_target_norm_makes_the_loss_blind_to_the_teacher_scale_and_padding():
    """target_norm: each teacher frame is layer-normalised, so a teacher whose residual stream is 100x larger
    gives the same loss; still padding-invariant (per frame) and a sum over utterances."""
    torch.manual_seed(0)
    t = [torch.randn(2, 12, 8) for _ in range(3)]
    s = [torch.randn(2, 6, 4) for _ in range(3)]
    t_len, s_len = torch.tensor([12, 8]), torch.tensor([6, 4])
    loss = LayerwiseKDLoss(8, 4, "2:2", 2, 2, l1_weight=1.0, l2_weight=1.0, cos_weight=1.0, target_norm=True)
    plain = LayerwiseKDLoss(8, 4, "2:2", 2, 2, l1_weight=1.0, l2_weight=1.0, cos_weight=1.0)
    plain.load_state_dict(loss.state_dict())
    base = loss(t, t_len, s, s_len)[0]
    assert torch.allclose(base, loss([x * 100 + 3 for x in t], t_len, s, s_len)[0], atol=1e-4)
    assert not torch.allclose(plain(t, t_len, s, s_len)[0], plain([x * 100 for x in t], t_len, s, s_len)[0])
    t_pad = [torch.cat([x, torch.randn(2, 4, 8) * 50], 1) for x in t]
    s_pad = [torch.cat([x, torch.randn(2, 2, 4)], 1) for x in s]
    assert torch.allclose(base, loss(t_pad, t_len, s_pad, s_len)[0], atol=1e-4)
    parts = sum(loss([x[i : i + 1, : t_len[i]] for x in t], t_len[i : i + 1], [x[i : i + 1, : s_len[i]] for x in s],
                     s_len[i : i + 1])[0] for i in range(2))
    assert torch.allclose(base, parts, atol=1e-4)
