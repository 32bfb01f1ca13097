"""HuBERT discriminative (codeword) KD: fairseq's own codeword scores, zero iff equal, padding, frame rates."""
import pytest
import torch

from kd_core.errors import KDConfigError
from kd_core.losses.hubert_disc import HubertCodebook, HubertDiscKDLoss, codeword_log_probs
from kd_core.teachers import load_teacher


def _codebook(d=6, f=4, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return HubertCodebook(torch.randn(f, d, generator=g), torch.randn(f, generator=g), torch.randn(k, f, generator=g), 0.1)


def _hidden(b, t, d, layers, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, t, d, generator=g) for _ in range(layers + 1)]


def test_codeword_scores_equal_fairseq_hubert_logits(tiny_teachers):
    """For every frame and target codeword k, fairseq's HubertModel (masking off) scores k with exactly
    cos(P h_T, e_k) / logit_temp: log-softmax of its row (positive first, then every other codeword)
    equals our log p_T(k)."""
    teacher = load_teacher("fairseq", str(tiny_teachers["fairseq_hubert"]))
    cb = teacher.codebook()
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(1, 8000, generator=g) * 0.1
    out = teacher(wav, torch.tensor([8000]))
    ours = codeword_log_probs(out.hidden[-1], cb.proj_weight, cb.proj_bias, cb.codewords, cb.temperature)[0]  # (T, K)
    t, k = ours.shape
    for seed in range(3):
        target = torch.randint(0, k, (1, t), generator=torch.Generator().manual_seed(seed))
        # fairseq's forward fails with mask=False (hubert.py takes ~mask_indices of None), so masking is turned
        # off on this instance by a mask that selects no frame; every frame is then scored in logit_u_list
        teacher.w2v.apply_mask = lambda x, padding_mask, target_list: (x, torch.zeros(x.shape[:2], dtype=torch.bool))
        try:
            with torch.no_grad():
                res = teacher.w2v(wav, target_list=[target], padding_mask=torch.zeros_like(wav, dtype=torch.bool), mask=True,
                                  features_only=False)
        finally:
            del teacher.w2v.apply_mask
        logits = res["logit_u_list"][0]  # (T, 1 + K): positive score, then every codeword (the positive set to -inf)
        assert logits.shape == (t, 1 + k)
        want = logits.log_softmax(-1)[:, 0]
        got = ours.gather(1, target.T)[:, 0]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        # and the raw scores themselves: cos / tau
        score = (torch.nn.functional.normalize(torch.nn.functional.linear(out.hidden[-1][0], cb.proj_weight, cb.proj_bias), dim=-1)
                 @ torch.nn.functional.normalize(cb.codewords, dim=-1).T) / cb.temperature
        torch.testing.assert_close(score.gather(1, target.T)[:, 0], logits[:, 0], atol=1e-5 / cb.temperature, rtol=1e-5)


def test_fine_tuned_teacher_is_refused_with_the_option(tiny_teachers):
    teacher = load_teacher("fairseq", str(tiny_teachers["fairseq_w2v2_ctc"]))
    with pytest.raises(KDConfigError, match="kd_codebook_teacher_path.*pre-trained"):
        teacher.codebook("kd_codebook_teacher_path")


def _loss(d_t=6, d_s=6, t_shift=20.0, s_shift=20.0, **kw):
    torch.manual_seed(0)
    conf = dict(l1_weight=1.0, cos_weight=0.0, heads="none")
    conf.update(kw)
    return HubertDiscKDLoss(d_t, d_s, "1:1,2:2", 2, 2, _codebook(d=d_t), teacher_shift_ms=t_shift, student_shift_ms=s_shift, **conf)


def test_zero_iff_student_features_equal_teacher():
    loss = _loss()
    with torch.no_grad():
        loss.disc_proj.weight.copy_(torch.eye(6))
        loss.disc_proj.bias.zero_()
    teacher = _hidden(2, 7, 6, 2, seed=1)
    lens = torch.tensor([7, 5])
    total, denom, stats = loss(teacher, lens, teacher, lens)
    assert float(total) == pytest.approx(0.0, abs=1e-5) and int(denom) == 12 and stats["kd_disc_agree"] == 1.0
    moved = [h.clone() for h in teacher]
    moved[2][1, 2] += 1.0  # one valid frame of the mapped layer differs
    total2, _, stats2 = loss(teacher, lens, moved, lens)
    assert stats2["kd_disc"] > 0 and float(total2) > 0
    moved = [h.clone() for h in teacher]
    moved[2][1, 6] += 5.0  # beyond utterance 2's length: padding never counts
    assert float(loss(teacher, lens, moved, lens)[0]) == pytest.approx(0.0, abs=1e-5)


def test_batch_is_sum_of_utterances_and_padding_invariant():
    loss = _loss(d_s=5, heads="linear")
    teacher, student = _hidden(3, 9, 6, 2, seed=2), _hidden(3, 9, 5, 2, seed=3)
    lens = torch.tensor([9, 4, 6])
    total, denom, _ = loss(teacher, lens, student, lens)
    alone = [loss([h[i:i + 1, :n] for h in teacher], lens[i:i + 1], [h[i:i + 1, :n] for h in student], lens[i:i + 1])
             for i, n in enumerate(lens.tolist())]
    torch.testing.assert_close(total, sum(a[0] for a in alone), rtol=1e-5, atol=1e-5)
    assert int(denom) == sum(int(a[1]) for a in alone) == 19


def test_finer_teacher_probabilities_are_averaged_onto_student_frames():
    """20 ms teacher, 40 ms student: p_T on a student frame is the mean of its two teacher frames'
    distributions (brute force), so the KL term equals a per-frame computation."""
    loss = _loss(d_s=6, t_shift=20.0, s_shift=40.0, heads="linear", disc_weight=1.0, l1_weight=0.0, cos_weight=1.0)
    teacher, student = _hidden(1, 8, 6, 2, seed=4), _hidden(1, 4, 6, 2, seed=5)
    lens_t, lens_s = torch.tensor([8]), torch.tensor([4])
    _, _, stats = loss(teacher, lens_t, student, lens_s)
    p_t = loss.log_probs(teacher[-1])[0].exp()
    lp_s = loss.log_probs(loss.disc_proj(student[2]))[0]
    want = 0.0
    for n in range(4):
        p = (p_t[2 * n] + p_t[2 * n + 1]) / 2
        want += float((p * (p.log() - lp_s[n])).sum())
    assert stats["kd_disc"] == pytest.approx(want / 4, rel=1e-4)


def test_a_cached_teacher_gives_the_codebook_of_the_model_behind_it(tiny_teachers, tmp_path):
    """The discriminative loss can read its targets from the teacher-target cache: the codebook then comes from the
    model behind the cache (fill mode); a cache in read mode, with no model, is refused with one line naming the option."""
    from kd_core.cache import CachedTeacher, TeacherTargetCache, teacher_fingerprint
    from kd_core.distiller import teacher_codebook

    path = str(tiny_teachers["fairseq_hubert"])
    hubert = load_teacher("fairseq", path)
    cache = TeacherTargetCache(tmp_path, teacher_fingerprint("fairseq", path, hubert), "1,2", "float16", False)
    own, cached = hubert.codebook("x"), teacher_codebook(CachedTeacher(cache, hubert, mode="fill"), "--teacher_path")()
    assert torch.equal(cached.codewords, own.codewords) and torch.equal(cached.proj_weight, own.proj_weight)
    with pytest.raises(KDConfigError, match="--teacher_path: kd_loss hubert_disc reads the teacher model's codebook"):
        teacher_codebook(CachedTeacher(cache, mode="read"), "--teacher_path")()
