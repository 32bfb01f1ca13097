#!/usr/bin/env python
"""Training throughput of layer KD: teacher online vs targets read from the cache vs a plain student step,
for a student of s3prl's DistilHuBERT shape (the teacher's waveform CNN + 2 encoder layers, three prediction
heads on the last layer) and for the same encoder behind the log-Mel + Conv2d front-end.

Every row trains the same utterances, in the same length-sorted batches, with the same optimiser, in its own
process (so its peak memory is its own); after two warm-up batches one pass over the batches is timed:

- ``plain``: student forward + CTC + backward + AdamW step (the floor of any training);
- ``kd_online``: + the frozen teacher run batched (exact per-utterance targets) + layer KD;
- ``kd_cache``: + layer KD on targets read from the teacher-target cache (fp16, built once beforehand).

Reported: seconds of audio per second, peak resident memory (and what setup alone took), the cache's build time
and size, and the epochs after which building the cache has paid for itself
(``build / (epoch online - epoch cached)``). s3prl's own distiller is not on PyPI (s3prl 0.4.18 ships no
``pretrain`` package); when it is importable the report says so, otherwise it names the missing module.

Usage: ``python -m bench.kd_throughput [--teacher zoo/hubert_mini/hubert_mini.pt] [--utts 300] [--batch 8]
[--threads 2] [--out bench/results/kd_throughput.md]``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Dict, List, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
MODES = ("plain", "kd_online", "kd_cache")
SHAPES = ("wav_cnn", "fbank")


def _rss_mb() -> float:
    """Peak resident memory of this process so far (MB). ``VmHWM`` belongs to the process's own address space;
    ``getrusage``'s ``ru_maxrss`` survives ``exec`` on Linux, so a spawned worker would report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration):  # not Linux: the rusage figure (KiB on Linux, bytes on macOS)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _batches(utts: Sequence[tuple], batch: int) -> List[List[int]]:
    """Length-sorted batches (what ESPnet's and fairseq's samplers do), the same for every row."""
    order = sorted(range(len(utts)), key=lambda i: utts[i][1].numel())
    return [order[i : i + batch] for i in range(0, len(order), batch)]


def teacher_shape(teacher) -> dict:
    """What the students copy from a fairseq teacher: its width and its waveform CNN layout."""
    layout = [(b[0].out_channels, b[0].kernel_size[0], b[0].stride[0]) for b in teacher.w2v.feature_extractor.conv_layers]
    return dict(width=teacher.hidden_size, layout=layout)


def student_for(shape: str, teacher_shape: dict, vocab: int):
    """DistilHuBERT's shape at the teacher's width: its waveform CNN layout (``wav_cnn``) or log-Mel (``fbank``)."""
    from kd_core.students import streaming_student

    width = teacher_shape["width"]
    conf = dict(d_model=width, num_layers=2, num_heads=4, ffn_dim=4 * width, conv_kernel=15, dropout=0.0,
                chunk_size=12, vocab_size=vocab)
    if shape == "wav_cnn":
        return streaming_student(frontend="wav_cnn", frontend_conf=dict(conv_layers=teacher_shape["layout"]), **conf)
    return streaming_student(frontend="fbank", frontend_conf=dict(n_mels=80, channels=16), **conf)


def _run_row(args: dict) -> Dict[str, float]:
    """One row in a fresh process: build, warm up, time one pass; returns throughput and peak memory."""
    from kd_core.cache import CachedTeacher, TeacherTargetCache
    from kd_core.data import pad_batch
    from kd_core.distiller import Distiller
    from kd_core.teachers import load_teacher

    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    utts = _load(args["wav_scp"], args["utts"])
    student = student_for(args["shape"], args["teacher_shape"], vocab=len(args["alphabet"]) + 1)
    teacher = None  # only the online row loads the teacher into its process
    if args["mode"] == "kd_online":
        teacher = load_teacher("fairseq", args["teacher"])
    elif args["mode"] == "kd_cache":
        teacher = CachedTeacher(TeacherTargetCache.open(args["cache"]), mode="read")
    dist = Distiller(teacher, student, kd_weight=float(teacher is not None), ctc_weight=1.0, layer_map=args["layer_map"]).train()
    opt = torch.optim.AdamW([p for p in dist.parameters() if p.requires_grad], lr=1e-4)
    index = {c: i + 1 for i, c in enumerate(args["alphabet"])}
    batches = _batches(utts, args["batch"])
    setup_mb = _rss_mb()

    def step(ids):
        wav, lens = pad_batch([utts[i][1] for i in ids])
        ys = [torch.tensor([index[c] for c in utts[i][2]]) for i in ids]
        y, yl = torch.nn.utils.rnn.pad_sequence(ys, batch_first=True), torch.tensor([len(t) for t in ys])
        total, den, _ = dist(wav, lens, y, yl)
        opt.zero_grad()
        (total / den).backward()
        opt.step()
        return float(lens.sum()) / student.sample_rate

    for ids in batches[:2]:
        step(ids)
    t0, audio = time.perf_counter(), 0.0
    for ids in batches:
        audio += step(ids)
    seconds = time.perf_counter() - t0
    return {"audio_s": audio, "seconds": seconds, "audio_per_s": audio / seconds, "peak_mb": _rss_mb(),
            "setup_mb": setup_mb, "params": sum(p.numel() for p in student.parameters())}


def _load(wav_scp: str, n: int):
    """``(utt_id, waveform, TEXT)`` of the first ``n`` utterances of a Kaldi data dir."""
    from kd_core.data import load_kaldi_audio

    return load_kaldi_audio(str(Path(wav_scp).parent))[:n]


def main(argv: Sequence[str] = None) -> dict:
    from kd_core.cache import build_cache, teacher_fingerprint
    from kd_core.data import read_wav_list
    from kd_core.errors import require
    from kd_core.teachers import load_teacher
    from tools.make_corpus import make_synthetic_corpus

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default=str(ROOT / "zoo/hubert_mini/hubert_mini.pt"), help="fairseq HuBERT/wav2vec2 .pt")
    p.add_argument("--layer_map", default="3:2,5:2,8:2", help="teacher:student pairs (DistilHuBERT: three heads on the last layer)")
    p.add_argument("--utts", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"students to run, of {','.join(SHAPES)}")
    p.add_argument("--work", default=str(ROOT / "exp/kd_throughput"), help="corpus and cache folder")
    p.add_argument("--out", default=None, help="also write the report (markdown) here, and the figures as .json beside it")
    a = p.parse_args(argv)
    a.shapes = [x for x in a.shapes.split(",") if x]
    require(a.shapes and set(a.shapes) <= set(SHAPES), f"--shapes {','.join(a.shapes)}: choose from {','.join(SHAPES)}")
    work = Path(a.work)
    make_synthetic_corpus(work / "corpus", seed=5, num_train=a.utts, num_valid=1, num_test=1, jobs=2)
    wav_scp = work / "corpus/kaldi/train/wav.scp"
    utts = _load(str(wav_scp), a.utts)
    alphabet = sorted({c for _, _, t in utts for c in t})
    audio_s = sum(w.numel() for _, w, _ in utts) / 16000
    torch.set_num_threads(a.threads)
    teacher = load_teacher("fairseq", a.teacher)
    layers = sorted({int(pair.split(":")[0]) for pair in a.layer_map.split(",")})
    shutil.rmtree(work / "cache", ignore_errors=True)  # time a whole build, every run
    t0 = time.perf_counter()
    with torch.inference_mode():
        cache = build_cache(work / "cache", teacher, teacher_fingerprint("fairseq", a.teacher, teacher), layers,
                            read_wav_list(str(wav_scp))[: a.utts], batch_size=a.batch, progress=False)
    build_s = time.perf_counter() - t0
    cache_bytes = sum(f.stat().st_size for f in Path(cache.path).rglob("*") if f.is_file())
    rows = {}
    ctx = mp.get_context("spawn")
    for shape in a.shapes:
        for mode in MODES:
            job = dict(shape=shape, mode=mode, teacher=a.teacher, layer_map=a.layer_map, utts=a.utts, batch=a.batch,
                       threads=a.threads, wav_scp=str(wav_scp), cache=str(cache.path), alphabet=alphabet,
                       teacher_shape=teacher_shape(teacher))
            with ctx.Pool(1) as pool:
                rows[(shape, mode)] = pool.apply(_run_row, (job,))
    s3prl = importlib.util.find_spec("s3prl") is not None and importlib.util.find_spec("s3prl.pretrain") is not None
    report = _report(a, teacher, rows, audio_s, build_s, cache_bytes, s3prl)
    print(report, end="")
    if a.out:
        from kd_core.atomic import atomic_write_text

        atomic_write_text(a.out, report)
        figures = {f"{s}/{m}": r for (s, m), r in rows.items()}
        figures.update(build_s=build_s, cache_bytes=cache_bytes, audio_s=audio_s)
        atomic_write_text(Path(a.out).with_suffix(".json"), json.dumps(figures, indent=1) + "\n")
    return {"rows": rows, "build_s": build_s, "cache_bytes": cache_bytes, "audio_s": audio_s}


def break_even_epochs(build_s: float, online_s_per_epoch: float, cached_s_per_epoch: float) -> float:
    """Epochs after which a cache built in ``build_s`` has paid for itself (``inf`` if reading it is not faster)."""
    saved = online_s_per_epoch - cached_s_per_epoch
    return build_s / saved if saved > 0 else float("inf")


def _report(a, teacher, rows, audio_s, build_s, cache_bytes, s3prl) -> str:
    n_t = sum(q.numel() for q in teacher.parameters())
    lines = ["# Layer-KD training throughput: teacher online vs teacher-target cache vs plain step", "",
             f"teacher `{os.path.relpath(a.teacher, ROOT) if a.teacher.startswith(str(ROOT)) else a.teacher}` (fairseq, {n_t / 1e6:.1f}M, {teacher.num_layers} x {teacher.hidden_size}, batched "
             f"with per-utterance statistics, inference mode); {a.utts} synthetic utterances ({audio_s:.0f} s of audio), "
             f"length-sorted batches of {a.batch}, {a.threads} thread(s); layer map `{a.layer_map}`; every row: one timed "
             "pass after two warm-up batches, in its own process", "",
             "| student | params (M) | step | audio s / s | vs plain | peak memory (MB) | setup alone (MB) |",
             "|---|---|---|---|---|---|---|"]
    names = {"wav_cnn": "s3prl shape (teacher's waveform CNN)", "fbank": "same encoder, log-Mel + Conv2d"}
    for shape in a.shapes:
        plain = rows[(shape, "plain")]["audio_per_s"]
        for mode in MODES:
            r = rows[(shape, mode)]
            lines.append(f"| {names[shape]} | {r['params'] / 1e6:.2f} | {mode} | {r['audio_per_s']:.1f} | "
                         f"{r['audio_per_s'] / plain:.2f}x | {r['peak_mb']:.0f} | {r['setup_mb']:.0f} |")
    lines += ["", f"Cache: built in {build_s:.1f} s ({audio_s / build_s:.0f} s of audio per second), {cache_bytes / 2**20:.1f} MiB "
              f"({cache_bytes / audio_s / 1024:.1f} KiB per second of audio).", ""]
    for shape in a.shapes:
        on, ca = (audio_s / rows[(shape, m)]["audio_per_s"] for m in ("kd_online", "kd_cache"))
        lines.append(f"- {names[shape]}: an epoch takes {on:.0f} s online vs {ca:.0f} s cached; the cache pays for itself "
                     f"after {break_even_epochs(build_s, on, ca):.2f} epochs.")
    lines += ["", "s3prl's distiller: " + ("importable, not run by this script" if s3prl else
              "not installed (PyPI s3prl 0.4.18 has no `s3prl.pretrain`); no s3prl row in this run"), "",
              f"command: `python -m bench.kd_throughput --teacher {os.path.relpath(a.teacher, ROOT) if a.teacher.startswith(str(ROOT)) else a.teacher} --layer_map {a.layer_map} --utts {a.utts} "
              f"--batch {a.batch} --threads {a.threads} --shapes {','.join(a.shapes)}`"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
