#!/usr/bin/env python
"""Teacher targets per second: a group-norm waveform-CNN teacher (wav2vec2/HuBERT Base layout) run batched
with per-utterance statistics (``kd_core/teachers/masked_norm.py``) vs one utterance at a time (what exact
targets cost before), and batched under bfloat16 autocast, side by side in one process on the same audio,
plus the largest difference between them (batched and alone must agree to float rounding).

Usage: ``python -m bench.teacher_speed [--teacher PATH] [--batch 8] [--repeats 3] [--threads 1] [--out FILE]``.
Default teacher: torchaudio's ``hubert_base`` factory (random weights, 94.7M; no download).
"""
from __future__ import annotations

import argparse
from typing import List

import torch

from .timing import best_time


def main(argv: List[str] = None) -> None:
    from kd_core.teachers import load_teacher
    from kd_core.teachers.base import _pad_outputs

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="hubert_base", help="torchaudio factory name, or a fairseq .pt")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min_s", type=float, default=2.5, help="shortest utterance (s); toolkits batch similar lengths")
    p.add_argument("--max_s", type=float, default=3.0, help="longest utterance (s)")
    p.add_argument("--out", default=None, help="also write the report (markdown) here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    kind = "fairseq" if a.teacher.endswith(".pt") else "torchaudio"
    teacher = load_teacher(kind, a.teacher)
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(int(16000 * a.min_s), int(16000 * a.max_s) + 1, (a.batch,), generator=g)
    wav = torch.randn(a.batch, int(lens.max()), generator=g) * 0.1
    wav = wav * (torch.arange(wav.size(1))[None] < lens[:, None])
    audio_s = float(lens.sum()) / 16000

    def one_by_one():
        return _pad_outputs([teacher._forward_batch(wav[i:i + 1, : int(n)], lens[i:i + 1]) for i, n in enumerate(lens.tolist())])

    with torch.no_grad():
        batched, alone = teacher(wav, lens), one_by_one()
        diff = max(float((b[i, :n] - s[i, :n]).abs().max()) for b, s in zip(batched.hidden, alone.hidden)
                   for i, n in enumerate(batched.lengths.tolist()))
        scale = max(float(h.abs().max()) for h in alone.hidden)
        t_batch = best_time(lambda: teacher(wav, lens), a.repeats)
        t_alone = best_time(one_by_one, a.repeats)
        teacher.set_compute_dtype("bfloat16")
        low = teacher(wav, lens)
        t_bf16 = best_time(lambda: teacher(wav, lens), a.repeats)
        rel = max(float((b - r).norm() / r.norm()) for b, r in zip(low.hidden, batched.hidden))
    n = sum(q.numel() for q in teacher.parameters())
    lines = [f"# Teacher throughput: batched with per-utterance norm statistics vs one utterance at a time", "",
             f"teacher `{a.teacher}` ({kind}, {n / 1e6:.1f}M parameters), batch of {a.batch} utterances "
             f"({audio_s:.1f} s of audio, {a.min_s:g}-{a.max_s:g} s each), {a.threads} thread(s), best of {a.repeats}", "",
             "| teacher run | seconds per batch | audio seconds per second |", "|---|---|---|",
             f"| one utterance at a time | {t_alone:.3f} | {audio_s / t_alone:.1f} |",
             f"| batched, per-utterance statistics | {t_batch:.3f} | {audio_s / t_batch:.1f} |",
             f"| batched, bfloat16 autocast (`compute_dtype=bfloat16`) | {t_bf16:.3f} | {audio_s / t_bf16:.1f} |", "",
             f"bfloat16 vs float32 (both batched): {t_batch / t_bf16:.2f}x; largest relative (Frobenius) error of a layer "
             f"{rel:.1e}", "",
             f"speed-up {t_alone / t_batch:.2f}x; largest difference between the two on valid frames {diff:.2e} "
             f"({diff / scale:.1e} of the largest value)", "",
             f"command: `python -m bench.teacher_speed --teacher {a.teacher} --batch {a.batch} --repeats {a.repeats} "
             f"--threads {a.threads} --min_s {a.min_s:g} --max_s {a.max_s:g}`",
             "", "Length-bucketed batches (ESPnet's and fairseq's samplers) pad little; a batch mixing 1 s and 4 s "
             "utterances pads most of its frames and runs faster one utterance at a time."]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if a.out:
        from kd_core.atomic import atomic_write_text

        atomic_write_text(a.out, text)


if __name__ == "__main__":
    main()
