#!/usr/bin/env python
"""Side-by-side speed benchmark: teacher vs streaming student, KD step vs plain step.

Measured in one process on the same audio (ratios, not absolute timings, are the point):
- parameters and CPU real-time factor (1 thread) of a wav2vec2-base-sized teacher
  (torchaudio factory, random weights) and of the ``student_small`` streaming preset, full
  forward and chunk-by-chunk streaming (``stream()`` fed 100 ms pieces);
- time of one training step with the teacher run online (KD + CTC) vs a plain CTC step.
Usage: ``python -m bench.speed [--seconds 8] [--repeats 3] [--quick]``.
"""
from __future__ import annotations

import argparse

import torch

from .timing import best_time


def main(argv=None):
    from torchaudio.models import wav2vec2_base

    from kd_core.distiller import Distiller, ctc_loss_sum
    from kd_core.streaming import algorithmic_latency_ms
    from kd_core.students import student_small, student_tiny
    from kd_core.teachers.torchaudio_teacher import TorchaudioTeacher

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny student and short audio (smoke run)")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    secs = 2.0 if a.quick else a.seconds
    wav = torch.randn(1, int(16000 * secs)) * 0.1
    lens = torch.tensor([wav.size(1)])
    teacher_model = wav2vec2_base(aux_num_out=32).eval()
    student = (student_tiny if a.quick else student_small)(chunk_size=12, vocab_size=32).eval()
    n_t = sum(q.numel() for q in teacher_model.parameters())
    n_s = sum(q.numel() for q in student.parameters())
    with torch.no_grad():
        t_teacher = best_time(lambda: teacher_model(wav, lens), a.repeats)
        t_student = best_time(lambda: student(wav, lens), a.repeats)
        pieces = list(wav.split(1600, dim=1))
        t_stream = best_time(lambda: student.stream(pieces), a.repeats)
    print(f"audio: {secs:.1f} s, 1 thread")
    print(f"teacher  wav2vec2_base     params {n_t / 1e6:7.2f}M  RTF {t_teacher / secs:.4f}")
    print(f"student  full (masked)     params {n_s / 1e6:7.2f}M  RTF {t_student / secs:.4f}")
    print(f"student  streaming 100 ms pieces              RTF {t_stream / secs:.4f}   latency "
          f"{algorithmic_latency_ms(12, student.frame_shift_ms, 0, student.frontend_lookahead_ms):.0f} ms")
    print(f"ratios: size {n_t / n_s:.1f}x smaller; speed {t_teacher / t_student:.1f}x (full), {t_teacher / t_stream:.1f}x (streaming)")

    torch.set_num_threads(2)
    batch = torch.randn(4, int(16000 * min(secs, 4.0))) * 0.1
    blens = torch.full((4,), batch.size(1))
    y, yl = torch.randint(1, 32, (4, 10)), torch.full((4,), 10)
    teacher = TorchaudioTeacher(teacher_model).freeze()
    dist = Distiller(teacher, student, layer_map="4:4,8:6,12:8" if not a.quick else "4:1,8:2,12:3", ctc_weight=1.0).train()
    opt = torch.optim.AdamW([q for q in dist.parameters() if q.requires_grad], lr=1e-4)

    def kd_step():
        s, d, _ = dist(batch, blens, y, yl)
        opt.zero_grad()
        (s / d).backward()
        opt.step()

    def plain_step():
        out = student(batch, blens)
        s, d = ctc_loss_sum(out.logits, out.lengths, y, yl)
        opt.zero_grad()
        (s / d).backward()
        opt.step()

    t_kd, t_plain = best_time(kd_step, a.repeats), best_time(plain_step, a.repeats)
    print(f"train step (B=4, 2 threads): KD with online teacher {t_kd:.3f} s, plain {t_plain:.3f} s, ratio {t_kd / t_plain:.2f}x")


if __name__ == "__main__":
    main()
