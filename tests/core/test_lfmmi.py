"""Pure-torch LF-MMI: brute-force path enumeration, CTC equivalence, padding invariance, stability."""
import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from kd_core.errors import KDConfigError
from kd_core.losses.lfmmi import LFMMIKDLoss, graph_forward, occupancies
from kd_core.losses.lfmmi_graph import Graph, bigram_logprobs, cached_den_graph, ctc_bigram_den_graph, ctc_num_graph


def random_graph(seed, states=3, pdfs=3, arcs=7):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(states, (arcs,), generator=g)
    dst = torch.randint(states, (arcs,), generator=g)
    pdf = torch.randint(pdfs, (arcs,), generator=g)
    start = torch.randn(states, generator=g)
    start[-1] = float("-inf")  # a state paths cannot start in
    return Graph(src, dst, pdf, torch.randn(arcs, generator=g), start, torch.randn(states, generator=g))


def brute_force_log_z(y, graph):
    """Sum over every sequence of T connected arcs, written independently of the recursion."""
    terms = []
    for path in itertools.product(range(graph.src.numel()), repeat=y.size(0)):
        if any(graph.dst[a] != graph.src[b] for a, b in zip(path, path[1:])):
            continue
        score = graph.start[graph.src[path[0]]] + graph.final[graph.dst[path[-1]]]
        for t, e in enumerate(path):
            score = score + graph.weight[e] + y[t, graph.pdf[e]]
        terms.append(score)
    return torch.stack(terms).logsumexp(0)


@pytest.mark.parametrize("seed", range(4))
def test_log_z_and_gradient_equal_brute_force(seed):
    graph = random_graph(seed)
    y = torch.randn(4, 3, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.double, requires_grad=True)
    g64 = Graph(graph.src, graph.dst, graph.pdf, graph.weight.double(), graph.start.double(), graph.final.double())
    ours = graph_forward(y[None], torch.tensor([4]), g64)[0]
    (g_ours,) = torch.autograd.grad(ours, y)
    ref = brute_force_log_z(y, g64)
    (g_ref,) = torch.autograd.grad(ref, y)
    assert torch.allclose(ours, ref, atol=1e-10) and torch.allclose(g_ours, g_ref, atol=1e-10)


@pytest.mark.parametrize("labels", [[1], [2, 2], [1, 3, 2], [3, 1, 1, 2]])
def test_ctc_graph_numerator_equals_ctc_loss(labels):
    torch.manual_seed(len(labels))
    t = 9
    logits = torch.randn(1, t, 4, dtype=torch.double, requires_grad=True)
    ours = graph_forward(logits.log_softmax(-1), torch.tensor([t]), ctc_num_graph(labels))[0]
    ref = -F.ctc_loss(logits.log_softmax(-1)[0], torch.tensor(labels), torch.tensor([t]), torch.tensor([len(labels)]),
                      reduction="sum")
    assert torch.allclose(ours, ref, atol=1e-9)
    assert torch.allclose(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(ref, logits)[0], atol=1e-7)


def test_padding_invariance_and_occupancies_sum_to_one():
    den = ctc_bigram_den_graph(bigram_logprobs([[1, 2, 3], [2, 2, 1]], 4))
    torch.manual_seed(0)
    y = torch.randn(3, 12, 4).log_softmax(-1)
    lens = torch.tensor([12, 7, 3])
    batch = graph_forward(y, lens, den, leaky_hmm=1e-3)
    alone = torch.stack([graph_forward(y[i : i + 1, : lens[i]], lens[i : i + 1], den, leaky_hmm=1e-3)[0] for i in range(3)])
    assert torch.allclose(batch, alone, atol=1e-5)
    y2 = y.clone()
    y2[1, 7:] = 1e4  # garbage in the padding changes nothing
    assert torch.allclose(graph_forward(y2, lens, den, 1e-3), batch, atol=1e-5)
    gamma = occupancies(y, lens, den)
    assert torch.allclose(gamma.sum(-1)[1, :7], torch.ones(7), atol=1e-5) and gamma[1, 7:].abs().max() == 0


def test_den_graph_transitions_are_normalised_and_cached(tmp_path):
    big = bigram_logprobs([[1, 2], [2, 3, 3]], 4)
    assert torch.allclose(big[:, 1:].exp().sum(1), torch.ones(4))
    g1 = cached_den_graph([[1, 2], [2, 3, 3]], 4, tmp_path)
    assert len(list(tmp_path.glob("den_*.pt"))) == 1 and not list(tmp_path.glob("*.tmp*"))
    g2 = cached_den_graph([[1, 2], [2, 3, 3]], 4, tmp_path)
    assert torch.equal(g1.weight, g2.weight) and g1.num_states == 2 * 4 - 1
    cached_den_graph([[1, 2]], 4, tmp_path)  # other transcripts -> another key
    assert len(list(tmp_path.glob("den_*.pt"))) == 2


def test_dense_and_scatter_recursions_agree():
    from kd_core.losses import lfmmi

    den = ctc_bigram_den_graph(bigram_logprobs([[1, 2, 3], [3, 3]], 4))
    y = torch.randn(2, 9, 4, dtype=torch.double).log_softmax(-1)
    lens = torch.tensor([9, 5])
    dense = graph_forward(y, lens, den, leaky_hmm=1e-2)
    original = lfmmi._dense_form
    try:
        lfmmi._dense_form = lambda g: None  # force the generic scatter path
        scatter = graph_forward(y, lens, den, leaky_hmm=1e-2)
    finally:
        lfmmi._dense_form = original
    assert torch.allclose(dense, scatter, atol=1e-9)


def test_long_input_is_finite():
    den = ctc_bigram_den_graph(bigram_logprobs([[1, 2, 3]], 4))
    y = (torch.randn(2, 1500, 4) * 30).log_softmax(-1).requires_grad_(True)
    z = graph_forward(y, torch.tensor([1500, 700]), den, leaky_hmm=1e-5)
    (g,) = torch.autograd.grad(z.sum(), y)
    assert torch.isfinite(z).all() and torch.isfinite(g).all()


def test_soft_kd_gradient_is_den_minus_teacher_occupancy():
    den = ctc_bigram_den_graph(bigram_logprobs([[1, 2, 3], [3, 2]], 4))
    torch.manual_seed(1)
    s_logits = torch.randn(2, 6, 4, dtype=torch.double, requires_grad=True)
    t_logits = torch.randn(2, 6, 4, dtype=torch.double)
    lens = torch.tensor([6, 4])
    loss = LFMMIKDLoss(den, "soft", beta=1.0, teacher_shift_ms=40, student_shift_ms=40)
    total, denom, _ = loss(s_logits.float().double(), lens, t_logits, lens)
    y = s_logits.log_softmax(-1)
    expected = (occupancies(y.float(), lens, den) - occupancies(t_logits.float().log_softmax(-1), lens, den))
    (g_y,) = torch.autograd.grad(total, s_logits)
    # chain rule through log_softmax: dL/dlogits = G - softmax * sum_k G
    g_expected = expected.double() - y.exp() * expected.double().sum(-1, keepdim=True)
    assert int(denom) == 10 and torch.allclose(g_y, g_expected, atol=1e-4)


@pytest.mark.parametrize("numerator", ["soft", "hard"])
def test_kd_loss_batch_is_sum_of_utterances_and_teacher_pooled(numerator):
    den = cached_den_graph([[1, 2, 3], [3, 2, 1]], 4)
    torch.manual_seed(2)
    s, t = torch.randn(2, 5, 4), torch.randn(2, 10, 4)
    s_len, t_len = torch.tensor([5, 3]), torch.tensor([10, 6])
    loss = LFMMIKDLoss(den, numerator, beta=0.8)
    total, denom, stats = loss(s, s_len, t, t_len)
    parts = [loss(s[i : i + 1, : s_len[i]], s_len[i : i + 1], t[i : i + 1, : t_len[i]], t_len[i : i + 1]) for i in range(2)]
    assert torch.allclose(total, sum(p[0] for p in parts), atol=1e-4) and int(denom) == 8
    assert math.isfinite(stats["lfmmi"]) and stats["lfmmi"] >= -1e-5  # MMI >= 0: numerator paths are den paths


def test_bad_options():
    den = ctc_bigram_den_graph(bigram_logprobs([[1]], 2))
    with pytest.raises(KDConfigError, match="numerator"):
        LFMMIKDLoss(den, "medium")
    with pytest.raises(KDConfigError, match="integer multiple"):
        LFMMIKDLoss(den, teacher_shift_ms=30, student_shift_ms=40)
