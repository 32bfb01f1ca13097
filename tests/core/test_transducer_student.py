"""Transducer student: the loss equals a brute-force forward algorithm over the lattice, is padding-invariant, and
greedy decoding chunk by chunk (waveform pieces through the streaming encoder) equals offline greedy decoding,
batched equals one by one, and the predictor's step equals its sequence output."""
import math

import pytest
import torch
from float_noise import assert_float_noise_close

from kd_core.students.transducer import TransducerStudent

V = 9


def _student(seed=0, **kw):
    torch.manual_seed(seed)
    conf = dict(frontend="fbank", frontend_conf=dict(n_mels=40, channels=8), d_model=32, num_layers=2, num_heads=4,
                ffn_dim=64, conv_kernel=5, dropout=0.0, chunk_size=3, context=2)
    conf.update(kw)
    return TransducerStudent(V, **conf).eval()


def _brute_rnnt(logits, targets, blank=0):
    """-log P(y | x) by the forward recursion in float64 over one utterance's ``(T, U + 1, V)`` joint."""
    lp = logits.double().log_softmax(-1)
    t_max, u1, _ = lp.shape
    alpha = torch.full((t_max, u1), -math.inf, dtype=torch.float64)
    for t in range(t_max):
        for u in range(u1):
            if t == 0 and u == 0:
                alpha[t, u] = 0.0
                continue
            a = alpha[t - 1, u] + lp[t - 1, u, blank] if t > 0 else torch.tensor(-math.inf, dtype=torch.float64)
            c = alpha[t, u - 1] + lp[t, u - 1, targets[u - 1]] if u > 0 else torch.tensor(-math.inf, dtype=torch.float64)
            alpha[t, u] = torch.logaddexp(a, c)
    return -(alpha[t_max - 1, u1 - 1] + lp[t_max - 1, u1 - 1, blank])


def test_loss_equals_brute_force_forward_algorithm_and_ignores_padding():
    m = _student()
    g = torch.Generator().manual_seed(1)
    enc = torch.randn(3, 7, 32, generator=g)
    targets = torch.randint(1, V, (3, 4), generator=g)
    tl, ul = torch.tensor([7, 5, 3]), torch.tensor([4, 2, 1])
    total, den, stats = m.loss(enc, tl, targets, ul)
    ref = 0.0
    for b in range(3):
        pred = m.predict(targets[b:b + 1, :ul[b]])
        logits = m.joiner(enc[b:b + 1, :tl[b], None], pred[:, None])[0]
        ref += float(_brute_rnnt(logits, targets[b, :ul[b]].tolist()))
    assert int(den) == 3 and total.item() == pytest.approx(ref, rel=1e-4)
    # extra padding (frames and tokens past every utterance's end) changes nothing
    padded = m.loss(torch.cat([enc, torch.randn(3, 2, 32, generator=g)], 1), tl, torch.cat([targets, targets[:, :1]], 1), ul)
    assert padded[0].item() == pytest.approx(total.item(), rel=1e-6)
    assert stats["rnnt"] == pytest.approx(ref / 3, rel=1e-4)
    total.backward()  # gradient reaches every part
    assert all(p.grad is not None for p in (m.joiner.out.weight, m.predictor.embed.weight))


def test_predictor_step_equals_its_sequence_output():
    m = _student()
    tokens = torch.tensor([[3, 5, 1, 7]])
    seq = m.predict(tokens)  # (1, 5, D): after start, after each token
    hist = m.predictor.initial_history(1)
    steps = [m.predictor.step(hist)]
    for k in tokens[0]:
        hist = torch.cat([hist[:, 1:], k.view(1, 1)], dim=1)
        steps.append(m.predictor.step(hist))
    assert_float_noise_close(torch.cat(steps), seq[0], width=32, depth=2, what="predictor step")


def _trained_enough(m):
    """Bias the joiner so greedy search emits a few tokens per utterance (a random joiner mostly emits blank)."""
    with torch.no_grad():
        m.joiner.out.bias.copy_(torch.linspace(-0.5, 0.5, V))
        m.joiner.out.bias[0] = 0.2
    return m


def test_streaming_greedy_equals_offline_and_batched_equals_alone():
    m = _trained_enough(_student(3))
    g = torch.Generator().manual_seed(4)
    wav = 0.1 * torch.randn(3, 16000, generator=g)
    lengths = torch.tensor([16000, 12000, 7000])
    out = m(wav, lengths)
    batched = m.greedy(out.hidden[-1], out.lengths).hyps
    assert sum(map(len, batched)) > 3, "the test needs emitted tokens to compare"
    for b in range(3):
        one = m(wav[b:b + 1, :lengths[b]], lengths[b:b + 1])
        alone = m.greedy(one.hidden[-1]).hyps[0]
        assert alone == batched[b]
        assert m.stream(wav[b:b + 1, :lengths[b]].split(1234, dim=1)).hyps[0] == alone


def test_streaming_encoder_output_matches_full_forward():
    m = _student(5)
    wav = 0.1 * torch.randn(1, 9000, generator=torch.Generator().manual_seed(6))
    full = m(wav, torch.tensor([9000])).hidden[-1]
    streamed = torch.cat([s[-1] for s in m.body_stream_steps(wav.split(777, dim=1))], dim=1)
    assert_float_noise_close(streamed, full, width=32, depth=4, what="streamed encoder output")
