"""Graphs for pure-torch LF-MMI: arc lists, CTC-topology numerator graphs and bigram denominator graphs.

A :class:`Graph` is a weighted acceptor over *pdfs* (output units; ``0`` = CTC blank): arcs
``(src, dst, pdf, log_weight)``, a start distribution and final weights, all in log space. Every
frame consumes exactly one arc, so a path of ``T`` arcs scores
``start[src_1] + sum_t (w_t + y_t[pdf_t]) + final[dst_T]``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..errors import require

logger = logging.getLogger(__name__)
NEG_INF = float("-inf")


@dataclass
class Graph:
    """Arcs ``src, dst, pdf`` (long ``(E,)``), ``weight`` (float ``(E,)``, log), ``start``/``final`` (``(S,)``, log)."""

    src: torch.Tensor
    dst: torch.Tensor
    pdf: torch.Tensor
    weight: torch.Tensor
    start: torch.Tensor
    final: torch.Tensor

    @property
    def num_states(self) -> int:
        return self.start.numel()

    def to(self, device) -> "Graph":
        return Graph(*(getattr(self, f).to(device) for f in ("src", "dst", "pdf", "weight", "start", "final")))

    def state_dict(self) -> dict:
        return {f: getattr(self, f) for f in ("src", "dst", "pdf", "weight", "start", "final")}


def _graph(arcs, num_states: int, start: dict, final: dict) -> Graph:
    src, dst, pdf, w = zip(*arcs)
    s = torch.full((num_states,), NEG_INF)
    f = torch.full((num_states,), NEG_INF)
    for k, v in start.items():
        s[k] = v
    for k, v in final.items():
        f[k] = v
    return Graph(torch.tensor(src), torch.tensor(dst), torch.tensor(pdf), torch.tensor(w, dtype=torch.float), s, f)


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
    return _graph(arcs, n + 1, {0: 0.0}, final)


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
    return _graph(arcs, n, {blank[0]: 0.0}, {s: 0.0 for s in range(n)})


def cached_den_graph(sequences: Sequence[Sequence[int]], vocab_size: int, cache_dir: Optional[str] = None,
                     smoothing: float = 0.1) -> Graph:
    """Build (or load from ``cache_dir``) the CTC-bigram denominator graph of ``sequences``.

    The cache file is keyed by a hash of the sequences, vocabulary size and smoothing, and
    written atomically, so a killed run never leaves a half-written graph behind.
    """
    key = hashlib.sha256(json.dumps([vocab_size, smoothing, [list(map(int, s)) for s in sequences]]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"den_ctc_bigram_{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        return Graph(**torch.load(path))
    graph = ctc_bigram_den_graph(bigram_logprobs(sequences, vocab_size, smoothing))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp")
        os.close(fd)
        torch.save(graph.state_dict(), tmp)
        os.replace(tmp, path)
        logger.info("denominator graph: %d states, %d arcs -> %s", graph.num_states, graph.src.numel(), path)
    return graph


__all__ = ["Graph", "ctc_num_graph", "bigram_logprobs", "ctc_bigram_den_graph", "cached_den_graph"]
