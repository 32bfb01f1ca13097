"""Pure-torch LF-MMI: brute-force path enumeration, CTC equivalence, padding invariance, stability;
the 2state topology against brute-force alignment sums; teacher 1-best sequences; options."""
import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from kd_core.errors import KDConfigError
from kd_core.losses import lfmmi
from kd_core.losses.lfmmi import LFMMIKDLoss, LFMMIPredictionLoss, graph_forward, graph_forward_occupancy, occupancies
from kd_core.losses.lfmmi_graph import (Graph, bigram_logprobs, cached_den_graph, ctc_bigram_den_graph, ctc_num_graph,
                                        den_graph, num_graph, teacher_1best_sequences, two_state_bigram_den_graph,
                                        two_state_num_graph)


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
    loss = LFMMIPredictionLoss(den, "soft", beta=1.0, teacher_shift_ms=40, student_shift_ms=40)
    total, denom, _ = loss(s_logits.float().double(), lens, t_logits, lens)
    y = s_logits.log_softmax(-1)
    expected = (occupancies(y.float(), lens, den) - occupancies(t_logits.float().log_softmax(-1), lens, den))
    (g_y,) = torch.autograd.grad(total, s_logits)
    # chain rule through log_softmax: dL/dlogits = G - softmax * sum_k G
    g_expected = expected.double() - y.exp() * expected.double().sum(-1, keepdim=True)
    assert int(denom) == 10 and torch.allclose(g_y, g_expected, atol=1e-4)


@pytest.mark.parametrize("topology", ["ctc", "2state"])
@pytest.mark.parametrize("numerator", ["soft", "hard"])
def test_kd_loss_batch_is_sum_of_utterances_and_teacher_pooled(numerator, topology):
    den = cached_den_graph([[1, 2, 3], [3, 2, 1]], 4, topology=topology)
    torch.manual_seed(2)
    s, t = torch.randn(2, 5, 4), torch.randn(2, 10, 4)
    s_len, t_len = torch.tensor([5, 3]), torch.tensor([10, 6])
    loss = LFMMIPredictionLoss(den, numerator, beta=0.8, topology=topology)
    total, denom, stats = loss(s, s_len, t, t_len)
    parts = [loss(s[i : i + 1, : s_len[i]], s_len[i : i + 1], t[i : i + 1, : t_len[i]], t_len[i : i + 1]) for i in range(2)]
    assert torch.allclose(total, sum(p[0] for p in parts), atol=1e-4) and int(denom) == 8
    assert math.isfinite(stats["lfmmi"]) and stats["lfmmi"] >= -1e-5  # MMI >= 0: numerator paths are den paths


def test_bad_options():
    den = ctc_bigram_den_graph(bigram_logprobs([[1]], 2))
    with pytest.raises(KDConfigError, match="numerator"):
        LFMMIPredictionLoss(den, "medium")
    with pytest.raises(KDConfigError, match="must be an integer multiple of the teacher"):
        LFMMIPredictionLoss(den, teacher_shift_ms=30, student_shift_ms=40)


# --- 2state topology, teacher 1-best, topology options ---------------------------------------------


def to_double(graph):
    return Graph(graph.src, graph.dst, graph.pdf, graph.weight.double(), graph.start.double(), graph.final.double(),
                 graph.topology)


def path_enumeration_log_z(y, graph):
    """log-sum-exp over every connected path of T arcs, grown arc by arc (no recursion over states)."""
    paths = [[e] for e in range(graph.src.numel()) if graph.start[graph.src[e]] > float("-inf")]
    for _ in range(y.size(0) - 1):
        paths = [p + [e] for p in paths for e in range(graph.src.numel()) if graph.src[e] == graph.dst[p[-1]]]
    terms = [graph.start[graph.src[p[0]]] + graph.final[graph.dst[p[-1]]]
             + sum(graph.weight[e] + y[t, graph.pdf[e]] for t, e in enumerate(p)) for p in paths]
    return torch.stack(terms).logsumexp(0) if terms else y.sum() * 0 + float("-inf")


def two_state_alignment_log_z(y, labels):
    """Sum over all pdf sequences of length T whose non-blank frames, unmerged, are exactly ``labels``."""
    terms = [sum(y[t, q] for t, q in enumerate(seq)) for seq in itertools.product(range(y.size(1)), repeat=y.size(0))
             if frame_labels(seq, "2state") == list(labels)]
    return torch.stack(terms).logsumexp(0) if terms else y.sum() * 0 + float("-inf")


def random_bigram(seed, v):
    logits = torch.randn(v, v, generator=torch.Generator().manual_seed(seed), dtype=torch.double)
    logits[:, 0] = float("-inf")
    return logits.log_softmax(-1)


@pytest.mark.parametrize("seed", range(3))
def test_two_state_den_log_z_and_gradient_equal_path_enumeration(seed):
    graph = to_double(two_state_bigram_den_graph(random_bigram(seed, 3)))
    assert graph.num_states == 5 and graph.topology == "2state"
    y = torch.randn(4, 3, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.double, requires_grad=True)
    ours = graph_forward(y[None], torch.tensor([4]), graph)[0]
    ref = path_enumeration_log_z(y, graph)
    (g_ours,), (g_ref,) = torch.autograd.grad(ours, y), torch.autograd.grad(ref, y)
    assert torch.allclose(ours, ref, atol=1e-10) and torch.allclose(g_ours, g_ref, atol=1e-10)


def frame_labels(seq, topology):
    """Token sequence of a frame-level pdf sequence: 2state keeps every non-blank frame, CTC merges repeats."""
    if topology == "ctc":
        seq = [q for i, q in enumerate(seq) if i == 0 or q != seq[i - 1]]
    return [q for q in seq if q != 0]


@pytest.mark.parametrize("topology", ["ctc", "2state"])
def test_den_graph_equals_bigram_weighted_alignment_sum(topology):
    """Both topologies are unambiguous: log Z_den = logsumexp over pdf sequences of emissions + bigram LM score."""
    bigram = random_bigram(7, 4)
    y = torch.randn(5, 4, generator=torch.Generator().manual_seed(8), dtype=torch.double, requires_grad=True)
    terms = []
    for seq in itertools.product(range(4), repeat=5):
        labels = [0] + frame_labels(seq, topology)
        lm = sum(bigram[a, b] for a, b in zip(labels, labels[1:]))
        terms.append(lm + sum(y[t, q] for t, q in enumerate(seq)))
    ref = torch.stack(terms).logsumexp(0)
    ours = graph_forward(y[None], torch.tensor([5]), to_double(den_graph(bigram, topology)))[0]
    (g_ours,), (g_ref,) = torch.autograd.grad(ours, y), torch.autograd.grad(ref, y)
    assert torch.allclose(ours, ref, atol=1e-10) and torch.allclose(g_ours, g_ref, atol=1e-10)


@pytest.mark.parametrize("labels", [[], [1], [2, 2], [1, 3, 2], [3, 1, 1]])
def test_two_state_numerator_equals_alignment_sum(labels):
    y = torch.randn(5, 4, generator=torch.Generator().manual_seed(len(labels)), dtype=torch.double).log_softmax(-1)
    y.requires_grad_(True)
    graph = to_double(two_state_num_graph(labels))
    ours = graph_forward(y[None], torch.tensor([5]), graph)[0]
    ref = two_state_alignment_log_z(y, labels)
    paths = path_enumeration_log_z(y, graph)
    (g_ours,), (g_ref,) = torch.autograd.grad(ours, y), torch.autograd.grad(ref, y)
    assert torch.allclose(ours, ref, atol=1e-10) and torch.allclose(paths, ref, atol=1e-10)
    assert torch.allclose(g_ours, g_ref, atol=1e-10)


def test_two_state_differs_from_ctc_on_repeats():
    """``2 2`` on two adjacent frames is two tokens in 2state, one token in CTC."""
    y = torch.full((1, 2, 3), -30.0, dtype=torch.double)
    y[0, :, 2] = 0.0  # frames "2 2"
    lens = torch.tensor([2])
    assert graph_forward(y, lens, two_state_num_graph([2, 2]))[0] > -1e-9
    assert graph_forward(y, lens, ctc_num_graph([2, 2]))[0] < -25
    assert graph_forward(y, lens, ctc_num_graph([2]))[0] > -1e-9
    assert graph_forward(y, lens, two_state_num_graph([2]))[0] < -25


def test_infeasible_numerator_is_minus_inf_with_zero_gradient():
    y = torch.randn(1, 3, 4, dtype=torch.double).log_softmax(-1).requires_grad_(True)
    z = graph_forward(y, torch.tensor([3]), two_state_num_graph([1, 2, 3, 1]))
    (g,) = torch.autograd.grad(z.sum(), y)
    assert z[0] == float("-inf") and torch.equal(g, torch.zeros_like(g))


@pytest.mark.parametrize("topology", ["ctc", "2state"])
def test_den_graph_from_one_sequence_is_finite(topology):
    den = cached_den_graph([[2, 2, 1]], 4, topology=topology)
    y = torch.randn(2, 30, 4).log_softmax(-1).requires_grad_(True)
    z = graph_forward(y, torch.tensor([30, 1]), den)
    (g,) = torch.autograd.grad(z.sum(), y)
    assert torch.isfinite(z).all() and torch.isfinite(g).all()
    assert torch.allclose(g.sum(-1)[0], torch.ones(30), atol=1e-4)  # occupancies sum to one per frame


@pytest.mark.parametrize("leaky", [0.0, 1e-2])
@pytest.mark.parametrize("topology", ["ctc", "2state"])
def test_dense_and_scatter_agree_in_value_and_gradient(topology, leaky, monkeypatch):
    dense_graphs = [den_graph(bigram_logprobs(corpus, 4), topology) for corpus in ([[1, 2, 3], [3, 3]], [[2]])]
    assert all(lfmmi._dense_form(g) is not None for g in dense_graphs)
    assert lfmmi._dense_form(num_graph([3, 1, 1], topology)) is None  # numerator graphs take the exact path
    y = (torch.randn(3, 9, 4, dtype=torch.double) * 4).log_softmax(-1)
    y[1, 6:] = 1e4  # padding garbage
    y.requires_grad_(True)
    lens = torch.tensor([9, 6, 0])
    results = []
    for force_scatter in (False, True):
        if force_scatter:
            monkeypatch.setattr(lfmmi, "_dense_form", lambda g: None)
        for g in dense_graphs:
            z = graph_forward(y, lens, g, leaky_hmm=leaky)
            results.append((z, torch.autograd.grad(z.sum(), y)[0]))
    for (z_d, g_d), (z_s, g_s) in zip(results[:2], results[2:]):
        assert torch.allclose(z_d, z_s, atol=1e-9) and torch.allclose(g_d, g_s, atol=1e-9)
        assert g_d[1, 6:].abs().max() == 0 and g_d[2].abs().max() == 0
    monkeypatch.undo()
    y_inf = y.detach().clone()
    y_inf[1, 6:] = float("-inf")  # -inf padding (NaN inside the dense recursion) stays out of value and gradient
    y_inf.requires_grad_(True)
    z = graph_forward(y_inf, lens, dense_graphs[0], leaky_hmm=leaky)
    (g,) = torch.autograd.grad(z.sum(), y_inf)
    assert torch.allclose(z, results[0][0], atol=1e-9) and torch.allclose(g, results[0][1], atol=1e-9)


@pytest.mark.parametrize("topology", ["ctc", "2state"])
def test_float32_forced_alignment_of_a_peaky_student_is_exact(topology):
    """Numerator paths far below the best state must survive (the dense recursion gave -inf here)."""
    torch.manual_seed(5)
    t_logits, s_logits = torch.randn(2, 1, 80, 32) * 10
    lens = torch.tensor([80])
    graph = num_graph(teacher_1best_sequences(t_logits, lens, topology)[0], topology)
    y32 = s_logits.log_softmax(-1).requires_grad_(True)
    y64 = y32.detach().double().requires_grad_(True)
    z32, z64 = graph_forward(y32, lens, graph), graph_forward(y64, lens, graph)
    (g32,), (g64,) = torch.autograd.grad(z32.sum(), y32), torch.autograd.grad(z64.sum(), y64)
    assert torch.isfinite(z32).all() and torch.allclose(z32.double(), z64, rtol=1e-5)
    assert torch.allclose(g32.double(), g64, atol=1e-4)


def test_dense_underflow_falls_back_to_the_exact_path(monkeypatch):
    """A dense-form graph whose live states all emit pdfs 200 nats below pdf 3: float32 underflows."""
    calls = []
    original = lfmmi._scatter_forward
    monkeypatch.setattr(lfmmi, "_scatter_forward", lambda *a: calls.append(1) or original(*a))
    g = two_state_num_graph([1, 2, 3])
    graph = Graph(g.src, g.dst, g.pdf, g.weight, g.start, torch.zeros_like(g.final))  # every state final
    assert lfmmi._dense_form(graph) is not None
    y64 = torch.full((1, 6, 4), -200.0, dtype=torch.double)
    y64[0, :, 3] = 0.0
    noise = torch.rand(1, 6, 4, generator=torch.Generator().manual_seed(6), dtype=torch.double)
    y64 = (y64 + noise).requires_grad_(True)
    y32 = y64.detach().float().requires_grad_(True)
    lens = torch.tensor([6])
    z64 = graph_forward(y64, lens, graph)
    assert not calls  # float64 holds exp(-200)
    z32 = graph_forward(y32, lens, graph)
    (g32,), (g64,) = torch.autograd.grad(z32.sum(), y32), torch.autograd.grad(z64.sum(), y64)
    # float32 rounding of log Z ~ -1000 alone is ~1e-4 nats
    assert calls and torch.allclose(z32.double(), z64, rtol=1e-6) and torch.allclose(g32.double(), g64, atol=1e-3)


@pytest.mark.parametrize("topology", ["ctc", "2state"])
def test_per_utterance_graphs_run_as_one_batch(topology):
    labels = [[1, 2], [3, 3, 1, 2], [2], [1, 1, 1, 1, 1, 1]]  # the last needs more frames than it has
    y = torch.randn(4, 7, 4, dtype=torch.double).log_softmax(-1).requires_grad_(True)
    lens = torch.tensor([7, 6, 2, 5])
    batch = graph_forward(y, lens, [num_graph(seq, topology) for seq in labels])
    alone = torch.cat([graph_forward(y[i : i + 1, : lens[i]], lens[i : i + 1], num_graph(seq, topology))
                       for i, seq in enumerate(labels)])
    (g_batch,), (g_alone,) = torch.autograd.grad(batch[:3].sum(), y), torch.autograd.grad(alone[:3].sum(), y)
    assert torch.allclose(batch, alone, atol=1e-10) and batch[3] == float("-inf")
    assert torch.allclose(g_batch, g_alone, atol=1e-10)
    with pytest.raises(KDConfigError, match="3 graphs for a batch of 4"):
        graph_forward(y, lens, [num_graph([1], topology)] * 3)


def test_den_graph_cache_key_depends_on_topology(tmp_path):
    seqs = [[1, 2], [2, 3, 3]]
    g_ctc = cached_den_graph(seqs, 4, tmp_path)
    g_two = cached_den_graph(seqs, 4, tmp_path, topology="2state")
    files = sorted(p.name for p in tmp_path.glob("den_*.pt"))
    assert len(files) == 2 and files[0].startswith("den_2state_") and files[1].startswith("den_ctc_")
    again = cached_den_graph(seqs, 4, tmp_path, topology="2state")  # loaded from the cache
    assert again.topology == "2state" and g_ctc.topology == "ctc"
    assert torch.equal(again.src, g_two.src) and torch.equal(again.weight, g_two.weight)
    assert not torch.equal(g_ctc.src, g_two.src)


def one_hot_logits(frames, vocab=4):
    out = torch.zeros(len(frames), vocab)
    out[torch.arange(len(frames)), torch.tensor(frames)] = 5.0
    return out


def test_teacher_1best_sequences_on_hand_made_logits():
    logits = torch.stack([one_hot_logits([0, 2, 2, 0, 2, 1, 1, 0]), one_hot_logits([1, 1, 3, 2, 2, 2, 2, 2])])
    lens = torch.tensor([8, 3])
    assert teacher_1best_sequences(logits, lens) == [[2, 2, 1], [1, 3]]
    assert teacher_1best_sequences(logits, lens, "2state") == [[2, 2, 2, 1, 1], [1, 1, 3]]
    # the 2state 1-best is the topology's best path: its numerator graph holds the argmax frames
    y = logits.log_softmax(-1)
    for topology in ("ctc", "2state"):
        for i, labels in enumerate(teacher_1best_sequences(logits, lens, topology)):
            best = y[i, : lens[i]].max(-1).values.sum()
            assert graph_forward(y[i : i + 1], lens[i : i + 1], num_graph(labels, topology))[0] >= best - 1e-5
    den = cached_den_graph(teacher_1best_sequences(logits, lens, "2state"), 4, topology="2state")
    assert torch.isfinite(graph_forward(y, lens, den)).all()


def test_distill_loss_passes_topology():
    den = cached_den_graph([[1, 2, 3]], 4, topology="2state")
    loss = LFMMIKDLoss(8, 8, 2, 2, den, alpha=1.0, numerator="hard", topology="2state")
    assert loss.pred.topology == "2state"
    torch.manual_seed(3)
    total, frames, stats = loss(None, torch.tensor([10]), None, torch.tensor([5]), torch.randn(1, 10, 4),
                                torch.randn(1, 5, 4))
    assert torch.isfinite(total) and int(frames) == 5 and math.isfinite(stats["lfmmi"])


def test_unknown_or_mismatched_topology():
    den = cached_den_graph([[1, 2]], 3)
    for call in (lambda: cached_den_graph([[1, 2]], 3, topology="hmm"), lambda: LFMMIPredictionLoss(den, topology="3state"),
                 lambda: teacher_1best_sequences(torch.zeros(1, 2, 3), torch.tensor([2]), "CTC"),
                 lambda: LFMMIKDLoss(8, 8, 2, 2, den, alpha=1.0, topology="hmm"), lambda: num_graph([1], "x")):
        with pytest.raises(KDConfigError, match="topology=.*'ctc', '2state'"):
            call()
    with pytest.raises(KDConfigError, match="denominator graph is 'ctc'"):
        LFMMIPredictionLoss(den, topology="2state")


@pytest.mark.parametrize("leaky", [0.0, 1e-3])
def test_fused_occupancies_equal_separate_passes(leaky):
    """graph_forward_occupancy: log Z, its gradient and the occupancies of a mixed batch (rows with and
    without gradient, different lengths) equal separate graph_forward / occupancies calls."""
    den = cached_den_graph([[1, 2, 3], [3, 2, 1], [2, 2]], 4)
    torch.manual_seed(3)
    y = torch.randn(3, 8, 4, dtype=torch.double).log_softmax(-1).requires_grad_(True)
    lens = torch.tensor([8, 5, 3])
    log_z, gamma = graph_forward_occupancy(y, lens, den, leaky)
    ref = graph_forward(y, lens, den, leaky)
    assert torch.allclose(log_z, ref) and torch.allclose(gamma, occupancies(y, lens, den, leaky), atol=1e-10)
    w = torch.tensor([1.0, 0.0, 2.0], dtype=torch.double)
    (g,) = torch.autograd.grad((log_z * w).sum(), y)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), y)
    assert torch.allclose(g, g_ref, atol=1e-10) and not gamma.requires_grad


def test_soft_kd_pools_the_teacher_before_its_occupancies():
    """With a 2x finer teacher the soft numerator is the teacher's posterior on the student's frames:
    gradient = gamma_den(student) - gamma(teacher probabilities averaged to the student's rate)."""
    den = cached_den_graph([[1, 2, 3], [3, 2]], 4)
    torch.manual_seed(4)
    s_logits = torch.randn(2, 6, 4, dtype=torch.double, requires_grad=True)
    t_logits = torch.randn(2, 12, 4, dtype=torch.double)
    s_len, t_len = torch.tensor([6, 4]), torch.tensor([12, 9])
    total, _, _ = LFMMIPredictionLoss(den, "soft", beta=1.0, teacher_shift_ms=20, student_shift_ms=40)(s_logits, s_len, t_logits, t_len)
    lens = torch.tensor([6, 4])
    pooled = t_logits.log_softmax(-1)[:, :12].reshape(2, 6, 2, 4).exp().mean(2).log()
    y = s_logits.log_softmax(-1)
    expected = occupancies(y.float(), lens, den) - occupancies(pooled.float(), lens, den)
    (g_y,) = torch.autograd.grad(total, s_logits)
    g_expected = expected.double() - y.exp() * expected.double().sum(-1, keepdim=True)
    assert torch.allclose(g_y, g_expected, atol=1e-4)


@pytest.mark.parametrize("numerator", ["soft", "hard"])
def test_a_peaky_finer_teacher_teaches_its_tokens_not_blanks(numerator):
    """A CTC teacher at 20 ms spiking once per token (blank elsewhere) distils a 40 ms student towards its
    tokens: from an all-blank student, gradient descent raises each token on its frame (soft), and the
    teacher's token sequence scores better than all blanks (hard). Averaging the teacher's log-probabilities
    over frame pairs (a spike next to a blank frame) buried the spikes: all blanks was the target."""
    den = cached_den_graph([[1, 2, 3], [3, 2, 1]], 4)
    t_logits = torch.full((1, 12, 4), -8.0)
    t_logits[0, :, 0] = 8.0
    for t, k in ((1, 1), (5, 2), (9, 3)):  # spikes on single 20 ms frames (p ~ 0.87)
        t_logits[0, t] = 0.0
        t_logits[0, t, k] = 3.0
    loss = LFMMIPredictionLoss(den, numerator, beta=1.0, teacher_shift_ms=20, student_shift_ms=40)
    blank = torch.full((1, 6, 4), -8.0)
    blank[0, :, 0] = 8.0
    lens, t_len = torch.tensor([6]), torch.tensor([12])
    if numerator == "soft":
        x = blank.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(x, lens, t_logits, t_len)[0], x)
        assert all(float(g[0, t, k]) < -0.1 for t, k in ((0, 1), (2, 2), (4, 3)))
    else:
        tokens = blank.clone()
        for t, k in ((0, 1), (2, 2), (4, 3)):
            tokens[0, t, 0], tokens[0, t, k] = -8.0, 8.0
        assert float(loss(tokens, lens, t_logits, t_len)[0]) < float(loss(blank, lens, t_logits, t_len)[0]) - 1.0
