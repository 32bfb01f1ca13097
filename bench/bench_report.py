"""The benchmark report: ``summary.md`` (tables, targets, command, versions, stage times), ``results.json``
and PNG plots (WER vs algorithmic latency, WER vs parameters, RTF). Every number comes from the run's
own files (``scores/*.json``, ``measure.json``, ``stages/*.json``); nothing is typed in by hand."""
from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Dict, List, Optional

from .bench_config import NOT_BUILT, RNNT_TEACHER_SHAPE, BenchConfig
from kd_core.atomic import atomic_write, atomic_write_text

STAGE_ORDER = ("data", "teacher", "teacher_eval", "cache", "students", "measure")


def versions() -> Dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for label, dists in (("torch", ["torch"]), ("torchaudio", ["torchaudio"]), ("espnet", ["espnet"]),
                         ("fairseq", ["fairseq-fixed", "fairseq"]), ("jiwer", ["jiwer"])):
        out[label] = "not installed"
        for d in dists:
            try:
                out[label] = metadata.version(d) + ("" if d == label else f" ({d})")
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({model or platform.processor() or 'unknown CPU'}), {platform.system()} {platform.machine()}"


def rel(a: float, b: float) -> float:
    """Relative change of ``a`` against ``b`` in %: ``(a - b) / b``; nan when ``b`` is 0 (unless both are)."""
    if b == 0:
        return 0.0 if a == 0 else math.nan
    return 100.0 * (a - b) / b


def fmt(x, spec: str = ".2f", none: str = "-") -> str:
    if x is None:
        return none
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    return format(x, spec)


def collect_rows(scores: Dict[str, Dict], speed: Dict, teacher_eval: Dict, cfg: BenchConfig) -> List[Dict]:
    """One row per model: the teacher, the chunk sweep (layer KD / scratch), the methods at the method chunk,
    then the methods not built yet."""
    t = speed["models"]["teacher"]
    t_wer, t_fsdd = teacher_eval["test"]["wer"], teacher_eval["fsdd_test"]["wer"]
    rows = [{"name": "teacher", "method": "teacher (zoo hubert_mini_ctc, non-streaming)", "chunk_ms": None,
             "wer": t_wer, "wer_fsdd": t_fsdd, "wer_valid": teacher_eval["valid"]["wer"], "cer": teacher_eval["test"]["cer"], **t}]
    for name, sc in scores.items():
        job, m = sc["job"], speed["models"][name]
        ms = job["chunk_ms"]
        scratch = scores.get(("lowres_" if job.get("labels") else "") + (f"scratch_{ms}ms" if ms else "scratch_full"))
        row = {"name": name, "method": job["method"], "chunk_ms": ms, "wer": sc["test"]["wer"], "cer": sc["test"]["cer"],
               "wer_fsdd": sc["fsdd_test"]["wer"], "wer_valid": sc["valid"]["wer"], **m, "degr": rel(sc["test"]["wer"], t_wer),
               "degr_fsdd": rel(sc["fsdd_test"]["wer"], t_fsdd), "train": sc["train"]}
        if job["kd"] and scratch is not None and not job.get("student"):  # KD vs scratch of the same shape only
            row["vs_scratch"] = -rel(sc["test"]["wer"], scratch["test"]["wer"])
            row["vs_scratch_fsdd"] = -rel(sc["fsdd_test"]["wer"], scratch["fsdd_test"]["wer"])
        rows.append(row)
    if cfg.suite == "main":
        rows += [{"name": key, "method": label, "not_built": where, "chunk_ms": cfg.method_chunk_ms} for key, label, where in NOT_BUILT]
    return rows


def main_table(rows: List[Dict]) -> List[str]:
    head = ("| model | method | chunk (ms) | alg. latency (ms) | params (M) | smaller | RTF full | RTF stream | faster "
            "(stream) | chunk compute mean / p95 (ms) | first output (ms) | WER synth | WER FSDD | rel. WER vs teacher "
            "synth / FSDD (%) | KD vs scratch synth / FSDD (%) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r.get("not_built"):
            lines.append(f"| {r['name']} | {r['method']} | {r['chunk_ms']} | {r['not_built']} | | | | | | | | | | | |")
            continue
        chunk = "full" if not r["chunk_ms"] else str(r["chunk_ms"])
        if r["name"] == "teacher":
            chunk = "full"
        comp = (f"{fmt(r.get('chunk_compute_ms_mean'), '.1f')} / {fmt(r.get('chunk_compute_ms_p95'), '.1f')}"
                if "chunk_compute_ms_mean" in r else "-")
        faster = f"{fmt(r.get('speedup'), '.1f')}x" + (f" ({fmt(r['speedup_stream'], '.1f')}x)" if "speedup_stream" in r else "")
        lines.append(
            f"| {r['name']} | {r['method']} | {chunk} | {fmt(r['latency_ms'], '.0f')} | {r['params'] / 1e6:.2f} | "
            f"{fmt(r.get('size_ratio'), '.1f')}x | {fmt(r.get('rtf'), '.4f')} | {fmt(r.get('rtf_stream'), '.4f')} | {faster} | "
            f"{comp} | {fmt(r.get('first_output_ms'), '.1f')} | {r['wer']:.1f} | {r['wer_fsdd']:.1f} | "
            f"{fmt(r.get('degr'), '+.1f')} / {fmt(r.get('degr_fsdd'), '+.1f')} | "
            f"{fmt(r.get('vs_scratch'), '+.1f')} / {fmt(r.get('vs_scratch_fsdd'), '+.1f')} |")
    return lines


def target_rows(rows: List[Dict], training: Dict, cfg: BenchConfig) -> List[Dict]:
    """Each target: measured value, threshold, met or not, margin (``+``: better than the target)."""
    by = {r["name"]: r for r in rows if not r.get("not_built")}
    tag = lambda ms: f"{ms}ms" if ms else "full"  # noqa: E731
    main = by[("rnnt_soft_" if cfg.suite == "rnnt" else "layer_kd_") + tag(cfg.method_chunk_ms)]  # the suite's main student
    out = []

    def add(target, value, thr, higher_better, unit="x", detail="", counted=True, why=""):
        ok = (value >= thr) if higher_better else (value <= thr)
        if not math.isfinite(value):
            ok = False
        if not counted:  # a target that would pass vacuously (e.g. degradation vs a teacher worse than scratch)
            ok, detail = None, f"not counted: {why}; {detail}"
        if unit == "%":
            margin = f"{(value - thr) if higher_better else (thr - value):+.1f} pp"
        else:
            margin = f"{100 * ((value / thr - 1) if higher_better else (1 - value / thr)):+.0f} %"
        out.append({"target": target, "value": value, "threshold": thr, "unit": unit, "met": ok if ok is None else bool(ok), "margin": margin,
                    "detail": detail})

    add("student >= 12x smaller than the teacher (parameters)", main["size_ratio"], 12.0, True)
    add(f"student >= 8x faster than the teacher, CPU RTF, {cfg.method_chunk_ms} ms student streaming chunk by chunk",
        main["speedup_stream"], 8.0, True)
    add(f"student >= 8x faster than the teacher, CPU RTF, {cfg.method_chunk_ms} ms student full-utterance forward",
        main["speedup"], 8.0, True)
    for ms in [c for c in cfg.chunks_ms if 0 < c <= 320 and cfg.suite == "main"]:
        r, scratch = by[f"layer_kd_{tag(ms)}"], by[f"scratch_{tag(ms)}"]
        for key, degr, label in (("wer", "degr", "synthetic test"), ("wer_fsdd", "degr_fsdd", "FSDD test")):
            detail = f"WER {r[key]:.1f} vs teacher {by['teacher'][key]:.1f}"
            add(f"relative WER degradation vs teacher <= 9 % at {ms} ms chunk (layer KD, {label})", r[degr], 9.0, False, "%",
                detail, counted=by["teacher"][key] < scratch[key],
                why=f"the teacher ({by['teacher'][key]:.1f}) does not beat the scratch student ({scratch[key]:.1f})")
    for key, label in (("vs_scratch", "synthetic test"), ("vs_scratch_fsdd", "FSDD test")) if cfg.suite == "main" else ():
        vals = {ms: by[f"layer_kd_{tag(ms)}"].get(key, math.nan) for ms in cfg.chunks_ms}
        worst = min(vals.values(), key=lambda v: v if math.isfinite(v) else -math.inf)
        add(f"distilled >= 15 % relative better than from scratch, every chunk size (layer KD, {label}; worst shown)",
            worst, 15.0, True, "%", ", ".join(f"{ms or 'full'}: {fmt(v, '+.1f')} %" for ms, v in vals.items()))
    add("KD step <= 1.2x a plain step, targets read from the cache", training["kd_cache_ratio"], 1.2, False,
        detail=f"online teacher: {training['kd_online_ratio']:.2f}x")
    add("LF-MMI KD loss <= 3x CTC loss time (forward + backward)", training["lfmmi_ratio"], 3.0, False,
        detail=f"denominator forward only: {training['lfmmi_den_ratio']:.2f}x")
    streams = {r["name"]: r["rtf_stream"] for r in rows if r.get("rtf_stream") is not None}
    worst = max(streams, key=streams.get)
    add("streaming student RTF <= 0.05 (chunk by chunk, 1 thread; worst streaming student shown)", streams[worst], 0.05,
        False, "", f"{worst}")
    return out


def evidence_lines(rows: List[Dict], cfg: BenchConfig) -> List[str]:
    """Does distilling help, and were the comparisons made at convergence: teacher vs the best scratch student,
    KD vs scratch with equal and with scarce labels, and the scratch student's valid WER at 1x vs more steps."""
    by = {r["name"]: r for r in rows if not r.get("not_built")}
    tag = lambda ms: f"{ms}ms" if ms else "full"  # noqa: E731
    m = tag(cfg.method_chunk_ms)
    t = by["teacher"]
    scratch = [r for r in rows if r.get("method") in ("from scratch", "from scratch (labelled part only)")]
    if not scratch:
        return []
    lines = ["## Does distilling help?", "", "| comparison | synthetic test | FSDD test |", "|---|---|---|"]
    cells = []
    for key in ("wer", "wer_fsdd"):
        best = min(scratch, key=lambda r: r[key])
        cells.append(f"{rel(t[key], best[key]):+.1f} % ({t[key]:.1f} vs {best[key]:.1f}, {best['name']})")
    lines.append(f"| teacher vs the best from-scratch student (relative WER, - = teacher better) | {cells[0]} | {cells[1]} |")
    for name, label in ((f"layer_kd_{m}", "equal labels"), (f"lowres_layer_kd_{m}", f"{100 * cfg.lowres_fraction:g} % labels")):
        r = by.get(name)
        if r is not None and "vs_scratch" in r:
            lines.append(f"| layer KD vs from scratch at {cfg.method_chunk_ms} ms, {label} (relative WER, + = KD better) | "
                         f"{r['vs_scratch']:+.1f} % ({r['wer']:.1f}) | {r['vs_scratch_fsdd']:+.1f} % ({r['wer_fsdd']:.1f}) |")
    once, more = by.get(f"scratch_{m}"), by.get(f"scratch_{m}_x{cfg.convergence_factor}")
    if once is not None and more is not None:
        change = rel(more["wer_valid"], once["wer_valid"])
        if min(more["wer_valid"], once["wer_valid"]) >= 90:  # stuck near 100 %: a small change says nothing
            verdict = "no verdict: the student has not learnt yet (valid WER >= 90 %)."
        elif abs(change) < 5:
            verdict = "converged (under 5 % relative)."
        else:
            verdict = ("NOT converged (5 % relative or more): the comparisons above are made before convergence; the "
                       "longer row is the better estimate.")
        lines += ["", f"Convergence check: the {cfg.method_chunk_ms} ms scratch student after {cfg.convergence_factor} x "
                  f"{cfg.student_steps} steps has valid WER {more['wer_valid']:.1f} vs {once['wer_valid']:.1f} after "
                  f"{cfg.student_steps} ({change:+.1f} % relative): " + verdict]
    return lines


def methods_lines(rows: List[Dict], cfg: BenchConfig) -> List[str]:
    """The methods suite: each method and shape against layer KD into the main student, same budget."""
    by = {r["name"]: r for r in rows if not r.get("not_built")}
    ref = by.get(f"layer_kd_{cfg.method_chunk_ms}ms")
    if cfg.suite != "methods" or ref is None:
        return []
    lines = [f"## Methods and shapes at {cfg.method_chunk_ms} ms (same steps, data and seed as layer KD)", "",
             "| model | method | params (M) | RTF stream | WER synth | WER FSDD | rel. WER vs layer KD synth / FSDD (%, - = better) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows[1:]:
        if r.get("not_built"):
            continue
        lines.append(f"| {r['name']} | {r['method']} | {r['params'] / 1e6:.2f} | {fmt(r.get('rtf_stream'), '.4f')} | "
                     f"{r['wer']:.1f} | {r['wer_fsdd']:.1f} | {rel(r['wer'], ref['wer']):+.1f} / {rel(r['wer_fsdd'], ref['wer_fsdd']):+.1f} |")
    return lines


def rnnt_lines(rows: List[Dict], cfg: BenchConfig) -> List[str]:
    """The rnnt suite: transducer students, soft vs hard targets, against the from-scratch transducer."""
    by = {r["name"]: r for r in rows if not r.get("not_built")}
    ref = by.get(f"rnnt_scratch_{cfg.method_chunk_ms}ms")
    if cfg.suite != "rnnt" or ref is None:
        return []
    lines = [f"## RNN-T: soft vs hard targets at {cfg.method_chunk_ms} ms ({100 * cfg.lowres_fraction:g} % labels + the "
             "rest as audio; same steps, data order and seed)", "",
             "| model | method | params (M) | utterances trained on (with transducer loss) | RTF stream (incl. search) | "
             "WER synth | WER FSDD | rel. WER vs scratch synth / FSDD (%, - = better) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows[1:]:
        if r.get("not_built") or not r["name"].startswith("rnnt_"):
            continue
        tr = r.get("train", {})
        used = f"{tr.get('utterances', '-')} ({tr.get('labelled', '-')})"
        lines.append(f"| {r['name']} | {r['method']} | {r['params'] / 1e6:.2f} | {used} | {fmt(r.get('rtf_stream'), '.4f')} | "
                     f"{r['wer']:.1f} | {r['wer_fsdd']:.1f} | {rel(r['wer'], ref['wer']):+.1f} / {rel(r['wer_fsdd'], ref['wer_fsdd']):+.1f} |")
    return lines


def plots(rows: List[Dict], results_dir: Path, cfg: BenchConfig) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    built = [r for r in rows if not r.get("not_built")]
    teacher = built[0]
    stream_lat = [r["latency_ms"] for r in built if r["name"] != "teacher" and math.isfinite(r["latency_ms"])]
    full_x = max(stream_lat) + 250 if stream_lat else 1000

    def x_of(r):
        return r["latency_ms"] if math.isfinite(r["latency_ms"]) else full_x

    files = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in ((axes[0], "wer", "synthetic test (unseen voices)"), (axes[1], "wer_fsdd", "FSDD test (real speech)")):
        for method, style in (("layer KD", "o-"), ("from scratch", "s--")):
            pts = sorted((x_of(r), r[key]) for r in built if r["method"] == method)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=method)
        for r in built:
            if r["name"] != "teacher" and r["method"] not in ("layer KD", "from scratch"):
                ax.plot(x_of(r), r[key], "^", label=r["method"])
        ax.axhline(teacher[key], color="k", ls=":", label=f"teacher ({teacher['params'] / 1e6:.1f}M, full context)")
        ticks = sorted({x_of(r) for r in built if r["name"] != "teacher"})
        ax.set_xticks(ticks)
        ax.set_xticklabels(["full" if t == full_x else f"{t:.0f}" for t in ticks], rotation=45)
        ax.set(title=f"WER vs algorithmic latency: {title}", xlabel="algorithmic latency (ms; chunk + front-end look-ahead)",
               ylabel="WER (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    files.append(_save(fig, results_dir / "wer_vs_latency.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in built:
        ax.scatter(r["params"] / 1e6, r["wer"], marker="*" if r["name"] == "teacher" else "o")
        ax.annotate(r["name"], (r["params"] / 1e6, r["wer"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set(xscale="log", xlabel="parameters (M, log scale)", ylabel="WER synthetic test (%)", title="WER vs parameters")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    files.append(_save(fig, results_dir / "wer_vs_params.png"))

    fig, ax = plt.subplots(figsize=(11, 4.5))
    labels, vals, colors = [], [], []
    for r in built:
        labels.append(r["name"] + (" (full fwd)" if r.get("rtf_stream") is not None else ""))
        vals.append(r["rtf"])
        colors.append("k" if r["name"] == "teacher" else "tab:blue")
        if r.get("rtf_stream") is not None:
            labels.append(r["name"] + " (stream)")
            vals.append(r["rtf_stream"])
            colors.append("tab:orange")
    ax.bar(range(len(vals)), vals, color=colors)
    ax.axhline(0.05, color="r", ls=":", label="target: streaming RTF 0.05")
    ax.set_xticks(range(len(vals)))
    ax.set_xticklabels(labels, rotation=75, fontsize=6)
    ax.set(yscale="log", ylabel="real-time factor (1 CPU thread, log)", title="CPU real-time factor (same utterances)")
    ax.legend()
    fig.tight_layout()
    files.append(_save(fig, results_dir / "rtf.png"))
    return files


def _finite(x):
    """JSON without Infinity/NaN: non-finite floats become strings ("inf", "nan")."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path.name


def write_report(out: Path, results_dir: Path, cfg: BenchConfig, command: str, stages: Dict[str, Dict],
                 data_info: Dict, teacher_info: Dict, teacher_eval: Dict, cache_info: Dict, scores: Dict[str, Dict],
                 measured: Dict, total_s: Optional[float]) -> str:
    rows = collect_rows(scores, measured["speed"], teacher_eval, cfg)
    training = measured["training"]
    targets = target_rows(rows, training, cfg)
    files = plots(rows, results_dir, cfg)
    t = rows[0]
    n_met = sum(x["met"] is True for x in targets)
    counted = sum(x["met"] is not None for x in targets)
    lines = [f"# Benchmark: teacher vs distilled streaming students ({cfg.mode} run" + (f", {cfg.suite} suite" if cfg.suite != "main" else "") + ")", "",
             f"Command: `{command}` (seed {cfg.seed}); machine: {machine()}; versions: "
             + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".", "",
             f"Data: the teacher's labelled set, regenerated from its seed: synthetic speech (espeak-ng + sox, closed "
             f"{cfg.corpus['vocab_size']}-word WordNet vocabulary, seed {cfg.corpus['seed']}), {data_info['synth']['train']} train / "
             f"{data_info['synth']['valid']} valid / {data_info['synth']['test']} test utterances, test voices (accent and voice "
             f"variant) never seen in training; FSDD real speech (CC BY-SA 4.0, Jakobovski et al.), 8 kHz resampled to 16 kHz, "
             f"official split ({data_info['fsdd']['train']} train / {data_info['fsdd']['test']} test). Training set of every "
             f"student = synthetic train + FSDD train ({data_info['train_utts']} utterances, {data_info['hours']['synth_train']:.2f} h "
             f"+ {data_info['hours']['fsdd_train']:.2f} h; {len(data_info['train_dropped_too_short'])} too short for CTC at 40 ms "
             f"dropped). FSDD's official split shares its 6 speakers between train and test, so FSDD test is seen-speaker real "
             f"speech; the synthetic test is unseen-voice. Low-resource rows: transcripts for {100 * cfg.lowres_fraction:g} % "
             f"of the training set (every {round(1 / cfg.lowres_fraction)}th utterance by id); layer KD reads the other "
             f"utterances as audio only (teacher targets, no CTC), from scratch trains on the labelled share alone.", "",
             f"Teacher: `{teacher_info['path']}` (sha256 `{teacher_info['sha256'][:16]}...`; `zoo/hubert_mini_ctc/CARD.md`): "
             f"HuBERT pre-trained without labels with fairseq's own task and criterion, then fine-tuned for letter CTC on "
             f"the full-size labelled set ({cfg.corpus['num_train']} synthetic utterances here: "
             + ("the same set" if cfg.mode == "full" else "a smaller draw of it") + f"); {teacher_info['layers']} x {teacher_info['width']}, {t['params'] / 1e6:.2f}M parameters, "
             f"loaded with `load_teacher(\"fairseq\", ...)`, not trained here; valid WER {teacher_eval['valid']['wer']:.1f} %. "
             f"Teacher-target cache: layers {','.join(map(str, cache_info['layers']))} + CTC logits, fp16, "
             f"{cache_info['utterances']} utterances, {cache_info['bytes'] / 2**20:.0f} MiB; every KD student reads it "
             f"(`CachedTeacher` mode `read`), none runs the teacher.", "",
             f"Students: kd_core streaming students ({cfg.student['frontend_conf']['n_mels']} log-Mel + Conv2d x4 "
             f"({cfg.student['frontend_conf']['channels']} channels) front-end, {cfg.student['num_layers']} x "
             f"{cfg.student['d_model']} chunked conformer (FFN {cfg.student['ffn_dim']}, kernel {cfg.student['conv_kernel']}, "
             f"unlimited left context, no look-ahead), 40 ms frames, CTC over the teacher's letters), {cfg.student_steps} steps "
             f"each, batches of <= {cfg.student_batch_s:g} s, AdamW lr {cfg.student_lr:g} (warm-up {cfg.student_warmup}, "
             f"cosine), seed {cfg.seed}: identical data order, steps, optimiser and initialisation for KD and from-scratch; "
             f"every KD method also keeps the CTC loss (weight 1). Layer map teacher:student `{cfg.layer_map}`."
             + (f" Two-stage: stage 2 `{cfg.stage2_layer_map}` from the stage-1 student (online `StudentTeacher`), "
                f"initialised from it: the two-stage row has had 2 x {cfg.student_steps} student steps, every other row "
                f"{cfg.student_steps}." if cfg.suite == "methods" else "")
             + (f" The convergence check has {cfg.convergence_factor} x {cfg.student_steps} steps. The low-resource layer "
                "KD student is paired: each step is exactly the from-scratch student's labelled batch plus as much "
                "unlabelled audio, which only the KD loss reads." if cfg.suite == "main" else "")
             + (" Rows named after a shape preset (`kd_core.students.presets`) train that shape instead, with layer map "
                "`auto` (student layers at 1/3, 2/3, 3/3 of its depth); the HuBERT-discriminative row distils the pre-trained "
                "`zoo/hubert_mini` (its codebook and its own cached layers); front-end KD stage A trains without CTC."
                if cfg.suite == "methods" else "")
             + (" The rnnt suite's students are transducers instead (`kd_core.students.transducer`: the same front-end "
                "and encoder, a stateless predictor over 2 tokens and a joiner, torchaudio's RNN-T loss, greedy search); its "
                f"teacher is a bigger non-streaming transducer (preset {RNNT_TEACHER_SHAPE}) trained here on every label "
                "with the same budget. Soft targets: the collapsed-lattice KL on every utterance (the lattice over the "
                "reference, or over the teacher's 1-best where there is none) + the transducer loss on the labelled share; "
                "hard targets: the teacher's 1-best as the missing transcripts (empty ones dropped), transducer loss only. "
                "No SpecAugment (the noise of noisy-student training is not modelled here)." if cfg.suite == "rnnt" else ""), "",
             "WER: greedy CTC, jiwer, %. Student WERs come from the masked full forward, which equals chunk-by-chunk "
             "streaming (max |stream - full| logit difference over checked utterances: "
             f"{max((r.get('stream_vs_full_max_abs_diff', 0.0) for r in rows if not r.get('not_built')), default=0):.1e}). "
             f"RTF: one thread, the same {measured['speed']['utterances']} synthetic test utterances "
             f"({measured['speed']['audio_s']:.0f} s), best of {cfg.timing_repeats} interleaved repeats; 'stream' = "
             "`StreamingStudent.stream` fed chunk-sized pieces. Chunk compute / first output: audio fed in 10 ms pieces; "
             "time of each call that emits a chunk, and of the first such call (time from the last sample the first chunk "
             "needs to its output). Algorithmic latency = chunk + front-end look-ahead (kd_core.streaming).", "",
             "## Results", ""]
    lines += main_table(rows)
    lines += [""] + evidence_lines(rows, cfg) + [""] + methods_lines(rows, cfg) + rnnt_lines(rows, cfg)
    lines += ["", f"## Targets ({n_met} of {counted} met; {len(targets) - counted} not counted)", "",
              "| target | measured | threshold | met | margin | detail |",
              "|---|---|---|---|---|---|"]
    for x in targets:
        val = f"{x['value']:+.1f} %" if x["unit"] == "%" else f"{x['value']:.3g}{x['unit']}"
        thr = f"{x['threshold']:g} %" if x["unit"] == "%" else f"{x['threshold']:g}{x['unit']}"
        met = {True: "yes", False: "NO", None: "not counted"}[x["met"]]
        lines.append(f"| {x['target']} | {val} | {thr} | {met} | {x['margin']} | {x['detail']} |")
    lines += ["", "## Training cost (same batch, same process, 1 thread)", "",
              f"Batch: {training['batch_utts']} utterances, {training['batch_audio_s']:.1f} s of audio; 480 ms student.", "",
              "| step | seconds | ratio to plain |", "|---|---|---|",
              f"| plain student step (CTC) | {training['plain_step_s']:.3f} | 1.00 |",
              f"| layer KD + CTC, teacher targets read from the cache | {training['kd_cache_step_s']:.3f} | "
              f"{training['kd_cache_ratio']:.2f} |",
              f"| layer KD + CTC, teacher run online | {training['kd_online_step_s']:.3f} | {training['kd_online_ratio']:.2f} |",
              "", "| loss (forward + backward, student logits of the batch) | seconds | ratio to CTC |", "|---|---|---|",
              f"| CTC | {training['ctc_loss_s']:.4f} | 1.00 |",
              f"| LF-MMI KD prediction loss (soft numerator + denominator, beta 0.8) | {training['lfmmi_loss_s']:.4f} | "
              f"{training['lfmmi_ratio']:.2f} |",
              f"| LF-MMI denominator forward only | {training['lfmmi_den_only_s']:.4f} | {training['lfmmi_den_ratio']:.2f} |",
              "", f"Denominator graph: {training['den_graph']['states']} states, {training['den_graph']['arcs']} arcs "
              f"(CTC topology x token bigram of the training transcripts, {training['den_graph']['vocab']} units).", "",
              "## Student training runs", "", "| model | steps | seconds | s / step | final CTC (mean of last 20 steps) |",
              "|---|---|---|---|---|"]
    for name, sc in scores.items():
        tr = sc["train"]
        final = fmt(tr.get("final_ctc"), ".3f") if "final_rnnt" not in tr else f"{fmt(tr['final_rnnt'], '.3f')} (transducer loss)"
        lines.append(f"| {name} | {tr['steps']} | {tr['seconds']:.0f} | {tr['sec_per_step']:.3f} | {final} |")
    lines += ["", "## Wall time per stage", "", "| stage | seconds | note |", "|---|---|---|"]
    for st in STAGE_ORDER:
        s = stages.get(st, {})
        lines.append(f"| {st} | {fmt(s.get('seconds'), '.0f')} | {s.get('note', '')} |")
    if total_s is not None:
        lines.append(f"| total (sum of stages) | {total_s:.0f} | {total_s / 60:.1f} min |")
    lines += ["", "Plots: " + ", ".join(f"[{f}]({f})" for f in files), "",
              "Examples (reference -> hypothesis, synthetic test): teacher: "
              + "; ".join(f"`{r}` -> `{h}`" for r, h in teacher_eval["test"]["examples"][:2])]
    text = "\n".join(lines) + "\n"
    atomic_write_text(results_dir / "summary.md", text)
    results = {"config": cfg.to_dict(), "command": command, "versions": versions(), "machine": machine(), "stages": stages,
               "data": data_info, "teacher": teacher_info, "teacher_eval": teacher_eval, "cache": cache_info,
               "rows": rows, "targets": targets, "training_cost": training}
    atomic_write_text(results_dir / "results.json", json.dumps(_finite(results), indent=1, default=str) + "\n")
    return text
