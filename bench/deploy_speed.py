#!/usr/bin/env python
"""The deployed student side by side with its PyTorch self and the teacher, one thread, the same utterances, one run.

Rows: the teacher's full forward (PyTorch); the student chunk by chunk in PyTorch (``stream_steps``, pieces of one
chunk); the exported graph under onnxruntime, fp32 and int8 (graph calls only: the fbank is the runtime's job);
sherpa-onnx end to end, fp32 and int8 (its own fbank + the graph + greedy CTC). Every row decodes the same audio
(each utterance + 0.66 s of tail zeros, as sherpa-onnx's examples pad) and is scored with jiwer against the same
references. Reported: RTF (compute / audio), median and 95th-percentile compute per chunk call, speed-up over the
teacher, model size, WER; a PNG of RTF and WER per row.

Usage::

    python -m bench.deploy_speed --checkpoint exp/deploy/s12_kaldi_c4/checkpoint_best.pt \\
        --teacher zoo/hubert_mini_ctc/hubert_mini_ctc.pt --data exp/zoo/finetune --splits test_synth,test_fsdd \\
        --num 100 --out bench/results
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

TAIL_S = 0.66
PYTORCH, ORT32, ORT8 = "PyTorch chunk by chunk", "onnxruntime fp32 (graph)", "onnxruntime int8 (graph)"
SHERPA32, SHERPA8 = "sherpa-onnx fp32 (end to end)", "sherpa-onnx int8 (end to end)"


def read_split(data: Path, split: str, num: int):
    """``(paths, references)`` of ``num`` utterances spread over ``split`` (fairseq manifest + ``.wrd``)."""
    lines = (data / f"{split}.tsv").read_text().splitlines()
    root, rows = lines[0], lines[1:]
    refs = (data / f"{split}.wrd").read_text().splitlines()
    idx = np.linspace(0, len(rows) - 1, min(num, len(rows))).round().astype(int)
    return [f"{root}/{rows[i].split(chr(9))[0]}" for i in idx], [refs[i] for i in idx]


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def teacher_rows(teacher, symbols, wavs: List[torch.Tensor]) -> Dict[str, Dict]:
    """The teacher's full forward per utterance (greedy CTC): ``{row: {"hyps", "seconds", "chunk_ms"}}``."""
    from kd_core.data import greedy_ctc
    from tools.zoo_eval import letters_to_words

    row = {"hyps": [], "seconds": 0.0, "chunk_ms": []}
    for wav in wavs:
        with torch.inference_mode():
            out, sec = timed(teacher, wav, torch.tensor([wav.size(1)]))
        row["hyps"].append(letters_to_words(greedy_ctc(out.logits, out.lengths)[0], symbols))
        row["seconds"] += sec
    return {"teacher full forward (PyTorch)": row}


def student_rows(student, export: Dict[str, Path], wavs: List[torch.Tensor], label: str) -> Dict[str, Dict]:
    """Every runtime of one exported student over ``wavs`` (already tail-padded): ``{row: {"hyps", "seconds", "chunk_ms"}}``."""
    from kd_core.data import greedy_ctc
    from kd_core.deploy import runtime
    from kd_core.students.model import stream_steps

    rows: Dict[str, Dict] = {}

    def add(name, hyp, seconds, chunk_s=()):
        r = rows.setdefault(f"{label}: {name}", {"hyps": [], "seconds": 0.0, "chunk_ms": []})
        r["hyps"].append(hyp)
        r["seconds"] += seconds
        r["chunk_ms"] += [1000 * s for s in chunk_s]

    piece = student.encoder.chunk_size * student.frontend.stride
    ort = {k: runtime.OrtStreamer(str(export[k])) for k in ("model", "int8")}
    sherpa = {k: runtime.sherpa_recognizer(str(export["model"].parent), int8=k == "int8") for k in ("model", "int8")}
    for wav in wavs:
        steps, calls, t_all = [], [], time.perf_counter()
        it = stream_steps(student.frontend, student.encoder, wav.split(piece, dim=1), student.frame_transform)
        while True:
            t0 = time.perf_counter()
            hid = next(it, None)
            if hid is None:
                break
            logits = student.ctc(hid[-1])
            calls.append(time.perf_counter() - t0)
            steps.append(logits)
        logits = torch.cat(steps, 1)
        add(PYTORCH, runtime.ids_to_text(student, greedy_ctc(logits, torch.tensor([logits.size(1)]))[0]),
            time.perf_counter() - t_all, [c for c, s in zip(calls, steps) if s.size(1)])

        feats = runtime.student_fbank(student, wav).numpy()
        for key, name in (("model", ORT32), ("int8", ORT8)):
            o = ort[key]
            o.reset()
            chunks, times = [], []
            for k in range(0, feats.shape[0] - o.length + 1, o.chunk * o.sub):
                lp, sec = timed(o.step, feats[k : k + o.length])
                chunks.append(lp)
                times.append(sec)
            lp = torch.from_numpy(np.concatenate(chunks))[None]
            add(name, runtime.ids_to_text(student, greedy_ctc(lp, torch.tensor([lp.size(1)]))[0]), sum(times), times)

        for key, name in (("model", SHERPA32), ("int8", SHERPA8)):
            rec, times, t0 = sherpa[key], [], time.perf_counter()
            stream = rec.create_stream()
            stream.accept_waveform(16000, wav[0].numpy())
            stream.input_finished()
            while rec.is_ready(stream):
                _, sec = timed(rec.decode_stream, stream)
                times.append(sec)
            add(name, " ".join(rec.get_result(stream).split()), time.perf_counter() - t0, times)
    return rows


def report(rows: Dict[str, Dict], refs: List[str], audio_s: float, sizes: Dict[str, float]) -> List[Dict]:
    import jiwer

    teacher_s = rows["teacher full forward (PyTorch)"]["seconds"]
    table = []
    for name, r in rows.items():
        ms = np.array(r["chunk_ms"]) if r["chunk_ms"] else np.array([np.nan])
        table.append({"row": name, "rtf": r["seconds"] / audio_s, "speedup_vs_teacher": teacher_s / r["seconds"],
                      "chunk_ms_median": float(np.median(ms)), "chunk_ms_p95": float(np.percentile(ms, 95)),
                      "size_mb": sizes.get(name), "wer": 100 * jiwer.wer(refs, [h or "<empty>" for h in r["hyps"]])})
    return table


def write_outputs(table: List[Dict], meta: Dict, out: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kd_core.atomic import atomic_write, atomic_write_text

    lines = [f"# Deployment: streaming students in PyTorch, onnxruntime and sherpa-onnx vs the teacher ({meta['teacher']})", "",
             f"{meta['utterances']} utterances ({meta['audio_s']:.0f} s with tail padding; {meta['splits']}), 1 thread; "
             f"students: {'; '.join(meta['students'])}; `python -m bench.deploy_speed` ({meta['date']}, {meta['cpu']}, load average {meta['load_at_start']} at the start: other jobs shared the 2 cores).", "",
             "| row | RTF | x teacher | per chunk median / p95 (ms) | size (MB) | WER % |", "|---|---|---|---|---|---|"]
    for r in table:
        size = f"{r['size_mb']:.2f}" if r["size_mb"] else ""
        chunk = "" if np.isnan(r["chunk_ms_median"]) else f"{r['chunk_ms_median']:.2f} / {r['chunk_ms_p95']:.2f}"
        lines.append(f"| {r['row']} | {r['rtf']:.4f} | {r['speedup_vs_teacher']:.1f} | {chunk} | {size} | {r['wer']:.1f} |")
    runtime_rows = [r for r in table if "sherpa-onnx" in r["row"]]
    if runtime_rows:
        best = min(runtime_rows, key=lambda r: r["rtf"])
        lines += ["", f"Targets in the runtime (sherpa-onnx end to end, 1 thread): RTF <= 0.01 at 160 ms -- best "
                  f"{best['rtf']:.4f} ({best['row']}): **{'met' if best['rtf'] <= 0.01 else 'not met'}**; >= 8x faster than "
                  f"the teacher's full forward -- {best['speedup_vs_teacher']:.1f}x: "
                  f"**{'met' if best['speedup_vs_teacher'] >= 8 else 'not met'}**."]
    lines += ["", "RTF: compute seconds / audio seconds. The onnxruntime rows time graph calls only (their fbank comes "
              "from PyTorch); the sherpa-onnx rows are end to end (fbank, graph, greedy search). The teacher row is "
              "one full forward per utterance (no streaming).", "", "![RTF and WER per row](deploy_speed.png)", ""]
    atomic_write_text(out / "deploy_speed.md", "\n".join(lines))
    atomic_write_text(out / "deploy_speed.json", json.dumps({"meta": meta, "rows": table}, indent=1))
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.2 + 0.32 * len(table)))
    names = [r["row"] for r in table]
    axes[0].barh(names, [r["rtf"] for r in table])
    axes[0].set_xscale("log")
    axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decade labels only (no overlaps)
    axes[0].set_xlabel("RTF (log scale, 1 thread)")
    axes[1].barh(names, [r["wer"] for r in table])
    axes[1].set_xlabel("WER %")
    axes[1].set_yticks([])
    for ax in axes:
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    atomic_write(out / "deploy_speed.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def main(argv: List[str] = None) -> List[Dict]:
    import platform

    import soundfile as sf

    from kd_core.deploy.wenet_onnx import export_wenet_ctc
    from kd_core.export_onnx import load_deployable
    from tools.zoo_eval import load_ctc_teacher

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, nargs="+", help="students: fairseq .pt or ESPnet .pth (with --config)")
    p.add_argument("--config", help="ESPnet config.yaml (one ESPnet student)")
    p.add_argument("--teacher", required=True, help="fairseq letter-CTC teacher (.pt; dict.ltr.txt beside it)")
    p.add_argument("--data", required=True, help="fairseq manifest folder with <split>.tsv and <split>.wrd")
    p.add_argument("--splits", default="test_synth,test_fsdd")
    p.add_argument("--num", type=int, default=100, help="utterances per split")
    p.add_argument("--out", required=True, help="folder of deploy_speed.{md,json,png}")
    p.add_argument("--export_dir", default="exp/deploy/onnx", help="where the benchmarked ONNX export is written")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(a.out)
    teacher, symbols = load_ctc_teacher(Path(a.teacher), Path(a.teacher).parent)
    paths, refs = [], []
    for split in a.splits.split(","):
        sp, sr = read_split(Path(a.data), split, a.num)
        paths += sp
        refs += sr
    wavs = [torch.from_numpy(np.concatenate([sf.read(p, dtype="float32")[0], np.zeros(int(TAIL_S * 16000), np.float32)]))[None]
            for p in paths]
    audio_s = sum(w.size(1) for w in wavs) / 16000
    mb = lambda f: Path(f).stat().st_size / 1e6  # noqa: E731
    rows = teacher_rows(teacher, symbols, wavs)
    sizes = {"teacher full forward (PyTorch)": 4 * sum(p.numel() for p in teacher.parameters()) / 1e6}
    students = []
    for i, ckpt in enumerate(a.checkpoint):
        student = load_deployable(ckpt, a.config, a.data)
        export = export_wenet_ctc(student, f"{a.export_dir}/{i}", int8=True)
        label = Path(ckpt).parent.name
        rows.update(student_rows(student, export, wavs, label))
        params = sum(t.numel() for m in (student.frontend, student.encoder, student.ctc) for t in m.parameters())
        sizes.update({f"{label}: {PYTORCH}": 4 * params / 1e6, f"{label}: {ORT32}": mb(export["model"]),
                      f"{label}: {ORT8}": mb(export["int8"]), f"{label}: {SHERPA32}": mb(export["model"]),
                      f"{label}: {SHERPA8}": mb(export["int8"])})
        enc = student.encoder
        students.append(f"{label} ({params / 1e6:.2f}M, {enc.num_layers} x {enc.d_model}, chunk "
                        f"{enc.chunk_size * student.frontend.stride / 16:.0f} ms, history {enc.num_left_chunks} chunks)")
    meta = {"students": students, "checkpoints": a.checkpoint, "teacher": a.teacher, "splits": a.splits,
            "utterances": len(wavs), "audio_s": audio_s, "date": time.strftime("%Y-%m-%d"),
            "cpu": platform.processor() or platform.machine(), "load_at_start": round(os.getloadavg()[0], 2)}
    table = report(rows, refs, audio_s, sizes)
    write_outputs(table, meta, out)
    return table


if __name__ == "__main__":
    main()
