"""What front-end distillation buys (Wang et al. 2022): the benchmark's 480 ms student (preset ``s12_wide``) with the zoo
teacher's waveform CNN copied in (its layout, 20 ms frames, the chunk in the same milliseconds) vs the log-Mel + Conv2d
front-end that front-end KD trains to replace it (40 ms frames): parameters and CPU RTF side by side in one process,
one thread, the same audio, best of interleaved repeats. WER of the two students: the methods suite.

``python -m bench.frontend_kd_cost`` -> ``bench/results/frontend_kd_cost.md``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from kd_core.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
TEACHER_CNN = "[(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2"  # zoo/hubert_mini_ctc's conv_feature_layers


def students():
    from fairseq_kd.models.kd_student import parse_conv_layers
    from kd_core.students.presets import preset_conf
    from kd_core.students import streaming_student

    conf = {**preset_conf("s12_wide"), "dropout": 0.0}
    fbank = streaming_student(**conf, chunk_size=12, vocab_size=32)  # 12 x 40 ms
    cnn_conf = {**conf, "frontend": "wav_cnn", "frontend_conf": {"conv_layers": parse_conv_layers(TEACHER_CNN)}}
    cnn = streaming_student(**cnn_conf, chunk_size=24, vocab_size=32)  # 24 x 20 ms
    return {"teacher's waveform CNN copied in (20 ms frames)": cnn, "log-Mel + Conv2d (front-end KD, 40 ms frames)": fbank}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--utts", type=int, default=8)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "bench/results/frontend_kd_cost.md"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    models = {k: m.eval() for k, m in students().items()}
    n = int(16000 * a.seconds)
    wavs = [0.1 * torch.randn(1, n) for _ in range(a.utts)]
    best = {k: float("inf") for k in models}
    with torch.no_grad():
        for m in models.values():
            m(wavs[0], torch.tensor([n]))
        for _ in range(a.repeats):  # interleaved: a slow phase of a shared machine hits both
            for k, m in models.items():
                t0 = time.perf_counter()
                for w in wavs:
                    m(w, torch.tensor([n]))
                best[k] = min(best[k], time.perf_counter() - t0)
    audio = a.utts * a.seconds
    ref = next(iter(models))
    lines = ["# Front-end KD: the teacher's waveform CNN vs the distilled log-Mel front-end, in the 480 ms student", "",
             f"`python -m bench.frontend_kd_cost`; preset `s12_wide` body, {a.utts} utterances x {a.seconds:g} s, full "
             f"forward, 1 thread, best of {a.repeats} interleaved repeats. Teacher CNN layout `{TEACHER_CNN}`.", "",
             "| front-end | parameters (M) | front-end parameters (M) | RTF | vs the CNN student |", "|---|---|---|---|---|"]
    for k, m in models.items():
        total = sum(q.numel() for q in m.parameters()) / 1e6
        fe = sum(q.numel() for q in m.frontend.parameters()) / 1e6
        ref_total = sum(q.numel() for q in models[ref].parameters()) / 1e6
        lines.append(f"| {k} | {total:.3f} | {fe:.3f} | {best[k] / audio:.4f} | {100 * (total / ref_total - 1):+.0f} % "
                     f"parameters, {best[ref] / best[k]:.2f}x speed |")
    atomic_write_text(Path(a.out), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
