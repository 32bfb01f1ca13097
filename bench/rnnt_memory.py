"""Peak memory of the RNN-T soft-target loss against vocabulary size: collapsed (3 probabilities per lattice node)
vs full-vocabulary KL, forward + backward, each row in its own spawned process (peak resident memory, ``VmHWM``,
above the row's own baseline after its inputs exist). ``torchaudio``'s RNN-T loss on the same lattice is shown for
scale: it materialises the whole ``(B, T, U + 1, V)`` joint. The collapsed loss evaluates the joint ``t_chunk``
frames at a time, keeps ``O(B * T * U)`` and checkpoints the chunks, so its ``V``-dependent part is one chunk's
working set, ``O(B * t_chunk * U * V)``, whatever ``T`` is; the full-vocabulary KL keeps ``O(B * T * U * V)``.

``python -m bench.rnnt_memory`` -> ``bench/results/rnnt_memory.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
from pathlib import Path
from typing import Dict

from kd_core.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
VOCABS = (64, 256, 1024, 4096)
MODES = ("collapsed", "full_vocab", "torchaudio_rnnt")
SHAPE = dict(batch=4, frames=400, tokens=30, dim=64, t_chunk=8)


def _row(vocab: int, mode: str) -> Dict:
    """One measurement in a fresh process: peak MB above the baseline, for loss forward + backward."""
    import torch
    import torch.utils.checkpoint  # noqa: F401 - imported before the baseline (its import costs memory too)

    from kd_core.losses.rnnt_kd import CollapsedRNNTKDLoss
    from kd_core.students.transducer import Joiner, rnnt_loss_sum

    from .kd_throughput import _rss_mb

    torch.set_num_threads(1)
    torch.manual_seed(0)
    b, t, u, h = SHAPE["batch"], SHAPE["frames"], SHAPE["tokens"], SHAPE["dim"]
    teacher, student = Joiner(h, h, h, vocab), Joiner(h, h, h, vocab)
    enc_t, pred_t = torch.randn(b, t, h), torch.randn(b, u + 1, h)
    enc_s, pred_s = torch.randn(b, t, h, requires_grad=True), torch.randn(b, u + 1, h, requires_grad=True)
    y, tl, ul = torch.randint(1, vocab, (b, u)), torch.full((b,), t), torch.full((b,), u)
    base = _rss_mb()
    if mode == "torchaudio_rnnt":
        loss = rnnt_loss_sum(student, enc_s, tl, pred_s, y, ul)[0]
    else:
        loss = CollapsedRNNTKDLoss(0, SHAPE["t_chunk"], full_vocab=mode == "full_vocab")(
            teacher, enc_t, pred_t, student, enc_s, pred_s, y, tl, ul)[0]
    loss.backward()
    _ = (teacher, enc_t, pred_t)  # held to the end: the peak counts only what the loss adds
    return {"vocab": vocab, "mode": mode, "peak_mb": round(_rss_mb() - base, 1)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "bench/results"))
    a = p.parse_args(argv)
    rows = []
    # glibc raises its mmap threshold after large frees, so freed ~16 MB joint chunks stay in the heap and the
    # resident peak would measure the allocator's high-water mark, not live tensors: fix the threshold for the rows
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    ctx = mp.get_context("spawn")
    for vocab in VOCABS:
        for mode in MODES:
            with ctx.Pool(1) as pool:
                rows.append(pool.apply(_row, (vocab, mode)))
    lattice = SHAPE["batch"] * SHAPE["frames"] * (SHAPE["tokens"] + 1)
    lines = ["# RNN-T soft-target loss: peak memory vs vocabulary", "",
             f"`python -m bench.rnnt_memory`; B={SHAPE['batch']}, T={SHAPE['frames']}, U={SHAPE['tokens']} "
             f"({lattice} lattice nodes), joiner width {SHAPE['dim']}, t_chunk {SHAPE['t_chunk']}; forward + backward, "
             "1 thread; MB of peak resident memory above each row's baseline (its own process; glibc's mmap threshold "
             "fixed at 64 KiB so that freed blocks leave the resident set).", "",
             "| V | collapsed KL (MB) | full-vocabulary KL (MB) | torchaudio RNN-T loss (MB) | full joint, fp32 (MB) |",
             "|---|---|---|---|---|"]
    for vocab in VOCABS:
        got = {r["mode"]: r["peak_mb"] for r in rows if r["vocab"] == vocab}
        lines.append(f"| {vocab} | {got['collapsed']} | {got['full_vocab']} | {got['torchaudio_rnnt']} | "
                     f"{lattice * vocab * 4 / 2**20:.1f} |")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "rnnt_memory.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "rnnt_memory.json", json.dumps({"shape": SHAPE, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
