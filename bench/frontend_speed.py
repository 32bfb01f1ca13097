#!/usr/bin/env python
"""Student waveform-CNN front-end vs fairseq's own feature extractors of the same conv layout, side by side
in one process on the same audio: forward and forward+backward, seconds of audio per second.

- ``kd_core`` ``WaveformCNN``: LayerNorm over channels after every conv, run channels-last (unfold + matmul);
- fairseq ``ConvFeatureExtractionModel(mode="layer_norm")``: the same function (checked here on the same
  weights), run as Conv1d + transpose + LayerNorm + transpose;
- fairseq ``mode="default"`` (GroupNorm on the first layer only; the layout of s3prl's DistilHuBERT CNN):
  a different, cheaper function, shown for scale.

Usage: ``python -m bench.frontend_speed [--batch 8] [--seconds 2] [--repeats 3] [--threads 1] [--out FILE]``.
"""
from __future__ import annotations

import argparse
from typing import List

import torch

from .timing import best_time

DEFAULT_LAYERS = "[(128, 10, 5)] + [(128, 3, 2)] * 3 + [(128, 2, 2)] * 4"


def main(argv: List[str] = None) -> None:
    from fairseq.models.wav2vec.wav2vec2 import ConvFeatureExtractionModel

    from fairseq_kd.models.kd_student import parse_conv_layers
    from kd_core.students.frontends import WaveformCNN

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", default=DEFAULT_LAYERS, help="conv layout, fairseq's conv_feature_layers syntax")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=2.0, help="length of each utterance")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="also write the report (markdown) here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    layers = parse_conv_layers(a.layers)
    ours = WaveformCNN(layers)
    same = ConvFeatureExtractionModel(layers, mode="layer_norm")
    default = ConvFeatureExtractionModel(layers, mode="default")
    for conv, norm, block in zip(ours.convs, ours.norms, same.conv_layers):
        block[0].weight, block[2][1].weight, block[2][1].bias = conv.weight, norm.weight, norm.bias
    n = int(16000 * a.seconds)
    wav, lens = torch.randn(a.batch, n), torch.full((a.batch,), n)
    audio_s = a.batch * a.seconds
    ref = 'fairseq extractor, mode="layer_norm" (same function)'
    runs = {"kd_core WaveformCNN (channels-last)": lambda x: ours(x, lens)[0],
            ref: lambda x: same(x).transpose(1, 2),
            'fairseq extractor, mode="default" (s3prl layout)': lambda x: default(x).transpose(1, 2)}
    with torch.no_grad():
        diff = float((ours(wav, lens)[0] - runs[ref](wav)).abs().max())
    rows = []
    for name, fn in runs.items():
        with torch.no_grad():
            t_fwd = best_time(lambda: fn(wav), a.repeats)
        x = wav.clone().requires_grad_(True)
        t_bwd = best_time(lambda: fn(x).sum().backward(), a.repeats)
        rows.append((name, t_fwd, t_bwd))
    ref_f, ref_b = next((f, b) for name, f, b in rows if name == ref)
    lines = ["# Student waveform-CNN front-end vs fairseq's extractors of the same layout", "",
             f"layers `{a.layers}`, batch of {a.batch} x {a.seconds:g} s, {a.threads} thread(s), best of {a.repeats}", "",
             "| front-end | forward s | audio s/s | forward+backward s | audio s/s | vs fairseq layer_norm (fwd / fwd+bwd) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {f:.3f} | {audio_s / f:.0f} | {b:.3f} | {audio_s / b:.0f} | {ref_f / f:.2f}x / {ref_b / b:.2f}x |"
              for name, f, b in rows]
    lines += ["", f"largest difference between ours and fairseq layer_norm on the same weights: {diff:.2e}", "",
              f"command: `python -m bench.frontend_speed --batch {a.batch} --seconds {a.seconds:g} --repeats {a.repeats} "
              f"--threads {a.threads}`"]
    report = "\n".join(lines) + "\n"
    if a.out:
        from kd_core.atomic import atomic_write_text

        atomic_write_text(a.out, report)
    print(report)


if __name__ == "__main__":
    main()
