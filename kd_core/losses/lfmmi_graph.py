"""Graphs for pure-torch LF-MMI: arc lists, numerator graphs and bigram denominator graphs.

A :class:`Graph` is a weighted acceptor over *pdfs* (output units; ``0`` = CTC blank): arcs
``(src, dst, pdf, log_weight)``, a start distribution and final weights, all in log space. Every
frame consumes exactly one arc, so a path of ``T`` arcs scores
``start[src_1] + sum_t (w_t + y_t[pdf_t]) + final[dst_T]``.

Two topologies, both over the SAME output units (pdf ``0`` = blank, ``1..V-1`` = tokens), because
teacher and student share the CTC output layer:

* ``"ctc"``: the CTC topology. A token ``k`` is one state emitting ``k`` with a self-loop; blanks
  between tokens are optional except between two equal tokens; repeats of a token merge.
* ``"2state"`` (our choice of a 2-state HMM over CTC units): token ``k`` is an *entry* state that
  emits ``k`` exactly once, followed by an optional *tail* state that emits blank with a self-loop;
  a leading blank self-loop state allows initial silence. The frames of a path are therefore
  ``0* y1 0* y2 ... 0* yU 0*``: each non-blank frame is one token, ``k, k`` is two tokens (no blank
  needed between them, no merging), and every pdf sequence is exactly one path (the topology is
  unambiguous). Like CTC, every arc's pdf is fixed by its destination state (dense fast path).
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from ..atomic import atomic_torch_save
from ..data import greedy_ctc
from ..errors import require

logger = logging.getLogger(__name__)
NEG_INF = float("-inf")
#: the graph topologies of :func:`num_graph` / :func:`den_graph`
TOPOLOGIES = ("ctc", "2state")
_FIELDS = ("src", "dst", "pdf", "weight", "start", "final")


def check_topology(topology: str) -> str:
    """Return ``topology`` or raise :class:`~kd_core.errors.KDConfigError` naming the valid values."""
    require(topology in TOPOLOGIES, f"topology={topology!r}: use one of {', '.join(map(repr, TOPOLOGIES))}")
    return topology


@dataclass
class Graph:
    """Arcs ``src, dst, pdf`` (long ``(E,)``), ``weight`` (float ``(E,)``, log), ``start``/``final`` (``(S,)``, log).

    ``topology`` names the topology it was built with (``""``: unknown, e.g. a hand-made graph).
    """

    src: torch.Tensor
    dst: torch.Tensor
    pdf: torch.Tensor
    weight: torch.Tensor
    start: torch.Tensor
    final: torch.Tensor
    topology: str = ""
    #: derived per-graph data (e.g. the dense transition matrix), filled on first use
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_states(self) -> int:
        return self.start.numel()

    def to(self, device) -> "Graph":
        return Graph(*(getattr(self, f).to(device) for f in _FIELDS), topology=self.topology)

    def state_dict(self) -> dict:
        return {**{f: getattr(self, f) for f in _FIELDS}, "topology": self.topology}


def _graph(arcs, num_states: int, start: dict, final: dict, topology: str) -> Graph:
    src, dst, pdf, w = zip(*arcs)
    s = torch.full((num_states,), NEG_INF)
    f = torch.full((num_states,), NEG_INF)
    for k, v in start.items():
        s[k] = v
    for k, v in final.items():
        f[k] = v
    return Graph(torch.tensor(src), torch.tensor(dst), torch.tensor(pdf), torch.tensor(w, dtype=torch.float), s, f,
                 topology)


def ctc_num_graph(labels: Sequence[int]) -> Graph:
    """The CTC graph of one label sequence (no blank inside ``labels``): its forward score equals
    ``-ctc_loss`` (states: 0 = initial, then ``blank, y1, blank, y2, ..., yU, blank``)."""
    require(all(int(y) > 0 for y in labels), "ctc_num_graph: labels must not contain the blank (0)")
    seq = [0]
    for y in labels:
        seq += [int(y), 0]
    n = len(seq)  # ctc states 1..n
    arcs = []
    for i, p in enumerate(seq):
        st = i + 1
        arcs.append((st, st, p, 0.0))  # self-loop
        if i + 1 < n:
            arcs.append((st, st + 1, seq[i + 1], 0.0))
        if p != 0 and i + 2 < n and seq[i + 2] != p:  # skip the blank between different labels
            arcs.append((st, st + 2, seq[i + 2], 0.0))
    arcs.append((0, 1, 0, 0.0))
    if len(seq) > 1:
        arcs.append((0, 2, seq[1], 0.0))
    final = {n: 0.0}
    if len(seq) > 1:
        final[n - 1] = 0.0
    return _graph(arcs, n + 1, {0: 0.0}, final, "ctc")


def bigram_logprobs(sequences: Sequence[Sequence[int]], vocab_size: int, smoothing: float = 0.1) -> torch.Tensor:
    """Add-``smoothing`` token bigram ``log P(next | prev)`` as ``(vocab_size, vocab_size)``.

    Row ``0`` is the sentence start (the blank never is a history); column ``0`` is unused (-inf).
    """
    counts = Counter()
    for seq in sequences:
        prev = 0
        for y in seq:
            require(0 < int(y) < vocab_size, f"bigram: token {y} outside 1..{vocab_size - 1}")
            counts[(prev, int(y))] += 1
            prev = int(y)
    c = torch.full((vocab_size, vocab_size), float(smoothing))
    for (a, b), n in counts.items():
        c[a, b] += n
    c[:, 0] = 0.0
    return (c / c.sum(1, keepdim=True)).log()


def ctc_bigram_den_graph(bigram: torch.Tensor) -> Graph:
    """CTC topology composed with a token bigram (the LF-MMI denominator graph).

    States: ``blank(h)`` (``h = 0``: sentence start, else last token) and ``tok(k)`` for each token.
    ``tok(h)`` repeats ``h`` (self-loop) or moves to ``blank(h)`` on a blank; ``blank(h)`` loops on
    blanks; both enter ``tok(k)`` on ``k`` with weight ``log P(k | h)`` (``tok(h) -> tok(h)`` only via
    a blank, as in CTC). Start: ``blank(0)``; every state is final.
    """
    v = bigram.size(0)
    blank = list(range(v))  # blank(h) = h
    tok = [None] + [v + k - 1 for k in range(1, v)]  # tok(k) = v + k - 1
    arcs = []
    for h in range(v):
        arcs.append((blank[h], blank[h], 0, 0.0))
        for k in range(1, v):
            arcs.append((blank[h], tok[k], k, float(bigram[h, k])))
        if h > 0:
            arcs.append((tok[h], tok[h], h, 0.0))
            arcs.append((tok[h], blank[h], 0, 0.0))
            for k in range(1, v):
                if k != h:
                    arcs.append((tok[h], tok[k], k, float(bigram[h, k])))
    n = 2 * v - 1
    return _graph(arcs, n, {blank[0]: 0.0}, {s: 0.0 for s in range(n)}, "ctc")


def two_state_num_graph(labels: Sequence[int]) -> Graph:
    """The ``"2state"`` graph of one label sequence (no blank inside ``labels``).

    States: ``0`` = leading blank (start, self-loop), then ``entry(u) = 2u - 1`` (emits ``y_u`` once)
    and ``tail(u) = 2u`` (blank self-loop) for ``u = 1..U``; final: ``entry(U)``, ``tail(U)`` (or the
    leading blank when ``labels`` is empty). Its paths are the frame sequences ``0* y1 0* ... yU 0*``.
    """
    require(all(int(y) > 0 for y in labels), "two_state_num_graph: labels must not contain the blank (0)")
    arcs = [(0, 0, 0, 0.0)]
    prev = [0]  # states that may move on to the next entry: leading blank, then entry(u) and tail(u)
    for u, y in enumerate(labels, 1):
        entry, tail = 2 * u - 1, 2 * u
        arcs += [(s, entry, int(y), 0.0) for s in prev]
        arcs += [(entry, tail, 0, 0.0), (tail, tail, 0, 0.0)]
        prev = [entry, tail]
    return _graph(arcs, 2 * len(labels) + 1, {0: 0.0}, {s: 0.0 for s in prev}, "2state")


def two_state_bigram_den_graph(bigram: torch.Tensor) -> Graph:
    """The ``"2state"`` topology composed with a token bigram (``(V, V)`` from :func:`bigram_logprobs`).

    States: ``lead`` (``0``; start, blank self-loop, history = sentence start), ``entry(k) = k``
    (emits ``k``) and ``tail(k) = V - 1 + k`` (blank self-loop) for each token ``k``. ``lead``,
    ``entry(h)`` and ``tail(h)`` enter every ``entry(k)`` -- ``k = h`` included -- with weight
    ``log P(k | h)`` (``h = 0`` for ``lead``); ``entry(h) -> tail(h)`` on a blank. Every state is
    final, as in :func:`ctc_bigram_den_graph`; ``2V - 1`` states, ``2V - 1 + (2V - 1)(V - 1)`` arcs.
    """
    v = bigram.size(0)
    arcs = [(0, 0, 0, 0.0)] + [(0, k, k, float(bigram[0, k])) for k in range(1, v)]
    for h in range(1, v):
        tail = v - 1 + h
        arcs += [(h, tail, 0, 0.0), (tail, tail, 0, 0.0)]
        for src in (h, tail):
            arcs += [(src, k, k, float(bigram[h, k])) for k in range(1, v)]
    n = 2 * v - 1
    return _graph(arcs, n, {0: 0.0}, {s: 0.0 for s in range(n)}, "2state")


def num_graph(labels: Sequence[int], topology: str = "ctc") -> Graph:
    """Numerator graph of one label sequence in ``topology`` (``"ctc"`` or ``"2state"``)."""
    return {"ctc": ctc_num_graph, "2state": two_state_num_graph}[check_topology(topology)](labels)


def den_graph(bigram: torch.Tensor, topology: str = "ctc") -> Graph:
    """Denominator graph: ``topology`` composed with the token bigram ``(V, V)``."""
    return {"ctc": ctc_bigram_den_graph, "2state": two_state_bigram_den_graph}[check_topology(topology)](bigram)


def teacher_1best_sequences(logits: torch.Tensor, lengths: torch.Tensor, topology: str = "ctc") -> List[List[int]]:
    """Label sequences of the teacher's best paths, e.g. to build the denominator graph from a teacher
    instead of transcripts. ``logits (B, T, V)`` (or log-probs), ``lengths (B,)`` -> token ids per utterance.

    ``"ctc"``: greedy CTC (argmax, merge repeats, drop blanks). ``"2state"``: the non-blank argmax
    frames, repeats NOT merged: every frame sequence is exactly one 2state path, so the argmax frames
    are the topology's best path and each non-blank frame is one token (``k k`` means two ``k``).
    Call it at the frame rate the graphs are used at (the student's, after pooling): a token held
    for two teacher frames counts twice, while at most ``T`` tokens keeps the numerator feasible.
    """
    check_topology(topology)
    if topology == "ctc":
        return greedy_ctc(logits, lengths)
    best = logits.argmax(-1)
    return [[int(k) for k in best[b, : int(lengths[b])].tolist() if k != 0] for b in range(best.size(0))]


def cached_den_graph(sequences: Sequence[Sequence[int]], vocab_size: int, cache_dir: Optional[str] = None,
                     smoothing: float = 0.1, topology: str = "ctc") -> Graph:
    """Build (or load from ``cache_dir``) the bigram denominator graph of ``sequences`` in ``topology``.

    ``sequences``: token ids (no blank), from transcripts or :func:`teacher_1best_sequences`. The
    cache file is keyed by a hash of the topology, sequences, vocabulary size and smoothing, and
    written atomically, so a killed run never leaves a half-written graph behind.
    """
    check_topology(topology)
    seqs = [list(map(int, s)) for s in sequences]
    key = hashlib.sha256(json.dumps([topology, vocab_size, smoothing, seqs]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"den_{topology}_bigram_{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        return Graph(**torch.load(path))
    graph = den_graph(bigram_logprobs(seqs, vocab_size, smoothing), topology)
    if path is not None:
        atomic_torch_save(graph.state_dict(), path)
        logger.info("%s denominator graph: %d states, %d arcs -> %s", topology, graph.num_states, graph.src.numel(),
                    path)
    return graph


__all__ = ["Graph", "TOPOLOGIES", "check_topology", "ctc_num_graph", "two_state_num_graph", "bigram_logprobs",
           "ctc_bigram_den_graph", "two_state_bigram_den_graph", "num_graph", "den_graph", "teacher_1best_sequences",
           "cached_den_graph"]
