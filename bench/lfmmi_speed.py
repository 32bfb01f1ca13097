#!/usr/bin/env python
"""LF-MMI (pure torch) forward+backward time vs ``torch.nn.functional.ctc_loss`` on the same batch.

Both losses see the same ``(B, T, V)`` log-probabilities (student-like: 40 ms frames, BPE-sized
vocabulary); LF-MMI runs on the bigram denominator graph (``--topology ctc`` or ``2state``) of
random "transcripts" (the graph size that matters: ``2V - 1`` states, ``~V^2`` arcs), CTC on
random label sequences.
Usage: ``python -m bench.lfmmi_speed [--batch 8] [--seconds 8] [--vocab 64] [--threads 1] [--topology ctc]``.
"""
from __future__ import annotations

import argparse
import torch
from torch.nn import functional as F

from .timing import best_time


def main(argv=None) -> None:
    from kd_core.losses.lfmmi import graph_forward
    from kd_core.losses.lfmmi_graph import TOPOLOGIES, bigram_logprobs, den_graph

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--vocab", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--topology", choices=TOPOLOGIES, default="ctc")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    t = int(a.seconds * 1000 / 40)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(1, a.vocab, (20,), generator=g).tolist() for _ in range(200)]
    den = den_graph(bigram_logprobs(seqs, a.vocab), a.topology)
    logits = torch.randn(a.batch, t, a.vocab, requires_grad=True)
    lens = torch.full((a.batch,), t)
    labels = torch.randint(1, a.vocab, (a.batch, t // 4), generator=g)
    label_lens = torch.full((a.batch,), t // 4)

    def run_lfmmi():
        graph_forward(logits.log_softmax(-1), lens, den).sum().backward()

    def run_ctc():
        lp = logits.log_softmax(-1).transpose(0, 1)
        F.ctc_loss(lp, labels, lens, label_lens, reduction="sum").backward()

    t_mmi, t_ctc = best_time(run_lfmmi, a.repeats), best_time(run_ctc, a.repeats)
    print(f"batch {a.batch} x {t} frames ({a.seconds:.0f} s at 40 ms), vocab {a.vocab}, {a.threads} thread(s)")
    print(f"{a.topology} denominator graph: {den.num_states} states, {den.src.numel()} arcs")
    print(f"| loss | fwd+bwd (s) | ratio to CTC |\n|---|---|---|\n| CTC | {t_ctc:.4f} | 1.00 |\n"
          f"| LF-MMI (den graph) | {t_mmi:.4f} | {t_mmi / t_ctc:.2f} |")


if __name__ == "__main__":
    main()
