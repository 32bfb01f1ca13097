"""Side-by-side measurements in one process, one thread: size, speed, streaming latency, training cost.

- parameters of every model;
- CPU real-time factor on the same synthetic test utterances: the teacher (whole utterance), every
  student's full forward and, for streaming students, ``StreamingStudent.stream`` fed chunk-sized
  pieces; repeats are interleaved across models and the best repeat counts;
- streaming compute latency: the waveform fed in 10 ms pieces (as a microphone would); the time of each
  call that emits a chunk (mean / 95th percentile) and of the first one (time from the last sample the
  first chunk needs to its output); plus a check that streaming output equals the full forward;
- training cost on one real training batch: a plain CTC step vs a layer-KD step with the teacher run
  online vs read from the teacher-target cache; LF-MMI KD loss vs CTC loss, forward + backward.
"""
from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import torch

from .bench_config import BenchConfig
from .bench_data import collate, duration_batches, load_split, split_dirs, tokenizer
from .bench_train import (build_student, cached_teacher, den_graph_fn, kd_conf, load_student, load_teacher,
                         student_jobs)
from kd_core.distiller import ctc_loss_sum, kd_context, kd_objective
from kd_core.streaming import algorithmic_latency_ms
from kd_core.students.transducer import is_transducer
from .timing import best_time

log = logging.getLogger("bench.measure")
SR = 16000


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def timed_stream(student, wav: torch.Tensor, piece: int):
    """Feed ``wav (1, S)`` in ``piece``-sample pieces through the student's streaming loop
    (:func:`kd_core.students.stream_steps`), timing each call. Returns ``(logits (1, T, V), [seconds of every
    call that emitted frames])``; transducers return their encoder output ``(1, T, D)`` instead of logits and each
    timed call includes the greedy search over the new frames."""
    from kd_core.students import stream_steps

    logits, emit_times = [], []
    steps = stream_steps(student.frontend, student.encoder, wav.split(piece, dim=1))
    transducer = is_transducer(student)  # its output per chunk: the encoder states + the greedy search step
    state = student.greedy_state(1) if transducer else None
    while True:
        t0 = time.perf_counter()
        hidden = next(steps, None)
        if hidden is None:
            break
        if transducer:
            out, state = hidden[-1], student.greedy(hidden[-1], state=state)
        else:
            out = student.ctc(hidden[-1])
        dt = time.perf_counter() - t0
        if out.size(1):
            emit_times.append(dt)
            logits.append(out)
    return torch.cat(logits, dim=1), emit_times


def p95(xs: Sequence[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


@torch.no_grad()
def speed_and_latency(out: Path, cfg: BenchConfig, names: List[str]) -> Dict:
    test = load_split(split_dirs(out)["test"])
    utts = [test[i][1][None] for i in range(0, len(test), max(1, len(test) // cfg.rtf_utts))][: cfg.rtf_utts]
    audio_s = sum(u.size(1) for u in utts) / SR
    teacher = load_teacher(cfg)
    models = {"teacher": teacher}
    models.update({n: load_student(out, cfg, n) for n in names})
    res = {"utterances": len(utts), "audio_s": round(audio_s, 2), "models": {}}
    runs: Dict[str, Callable[[], object]] = {}
    for name, m in models.items():
        if name == "teacher":
            runs[name] = lambda m=m: [m(u, torch.tensor([u.size(1)])) for u in utts]
            res["models"][name] = {"params": params(m), "latency_ms": float("inf")}
            continue
        chunk = m.encoder.chunk_size
        res["models"][name] = {"params": params(m), "chunk_frames": chunk, "latency_ms": algorithmic_latency_ms(
            chunk, m.frame_shift_ms, m.encoder.right_context, m.frontend_lookahead_ms)}
        if is_transducer(m):  # a transducer's cost includes its search
            runs[name] = lambda m=m: [m.greedy(m(u, torch.tensor([u.size(1)])).hidden[-1]) for u in utts]
        else:
            runs[name] = lambda m=m: [m(u, torch.tensor([u.size(1)])) for u in utts]
        if chunk > 0:
            piece = chunk * m.frontend.stride
            runs[name + "/stream"] = lambda m=m, piece=piece: [m.stream(list(u.split(piece, dim=1))) for u in utts]
    best = {k: float("inf") for k in runs}
    for k, fn in runs.items():  # warm-up
        fn()
    for _ in range(cfg.timing_repeats):  # interleaved repeats: slow phases of a shared machine hit every model
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    for k, t in best.items():
        name, _, kind = k.partition("/")
        res["models"][name]["rtf_stream" if kind else "rtf"] = t / audio_s
    for name, m in models.items():
        if name == "teacher" or m.encoder.chunk_size <= 0:
            continue
        emit, first, diff = [], [], 0.0
        for u in utts[: max(2, len(utts) // 3)]:
            logits, times = timed_stream(m, u, SR // 100)
            emit += times
            first.append(times[0])
            full = m(u, torch.tensor([u.size(1)]))
            full = full.hidden[-1] if is_transducer(m) else full.logits
            diff = max(diff, float((full[:, : logits.size(1)] - logits).abs().max()), abs(full.size(1) - logits.size(1)))
        res["models"][name].update(chunk_compute_ms_mean=1000 * statistics.mean(emit), chunk_compute_ms_p95=1000 * p95(emit),
                                   first_output_ms=1000 * statistics.median(first), stream_vs_full_max_abs_diff=diff)
    t_rtf = res["models"]["teacher"]["rtf"]
    for name, r in res["models"].items():
        r["speedup"] = t_rtf / r["rtf"]
        r["size_ratio"] = res["models"]["teacher"]["params"] / r["params"]
        if "rtf_stream" in r:
            r["speedup_stream"] = t_rtf / r["rtf_stream"]
    return res


def training_cost(out: Path, cfg: BenchConfig) -> Dict:
    """Per-step time of a plain CTC step, a layer-KD step reading the cache and one running the teacher
    online (same batch, same student, same process), and LF-MMI vs CTC loss time."""
    from kd_core.losses.lfmmi import LFMMIPredictionLoss, graph_forward
    from kd_core.losses.registry import build_kd_loss

    tok = tokenizer(out)
    train = load_split(split_dirs(out)["train"])
    idx = next(duration_batches(train, cfg.student_batch_s, cfg.seed))
    wav, wl, y, yl = collate([train[i] for i in idx], tok)
    torch.manual_seed(cfg.seed)
    student = build_student(out, cfg, cfg.method_chunk_ms, len(tok)).train()
    online, cached = load_teacher(cfg), cached_teacher(out, cfg)
    kd = build_kd_loss("layerwise", kd_conf(cfg.layer_map), kd_context(online, student))
    opt = torch.optim.AdamW(list(student.parameters()) + list(kd.parameters()), lr=1e-5)

    def step(teacher):
        def run():
            s_out = student(wav, wl)
            t_out = teacher(wav, wl) if teacher is not None else None
            s, d, _ = kd_objective(kd if teacher is not None else None, s_out, t_out, 1.0 if teacher is not None else 0.0,
                                   1.0, y, yl)
            opt.zero_grad()
            (s / d).backward()
            opt.step()
        return run

    r = cfg.timing_repeats
    times = {"plain": [], "kd_cache": [], "kd_online": []}
    fns = {"plain": step(None), "kd_cache": step(cached), "kd_online": step(online)}
    for k, fn in fns.items():
        fn()
    for _ in range(r):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    res = {"batch_utts": len(idx), "batch_audio_s": round(float(wl.sum()) / SR, 2), "threads": torch.get_num_threads()}
    res.update({f"{k}_step_s": min(v) for k, v in times.items()})
    res["kd_cache_ratio"] = res["kd_cache_step_s"] / res["plain_step_s"]
    res["kd_online_ratio"] = res["kd_online_step_s"] / res["plain_step_s"]

    with torch.no_grad():
        s_logits = student.eval()(wav, wl)
        t_out = cached(wav, wl)
    logits = s_logits.logits.detach().clone().requires_grad_(True)
    lens = s_logits.lengths
    graph = den_graph_fn(out, tok, train)()
    pred = LFMMIPredictionLoss(graph, teacher_shift_ms=online.frame_shift_ms, student_shift_ms=student.frame_shift_ms)

    def run_ctc():
        ctc_loss_sum(logits, lens, y, yl)[0].backward()

    def run_lfmmi():
        pred(logits, lens, t_out.logits, t_out.lengths)[0].backward()

    def run_den():
        graph_forward(logits.log_softmax(-1), lens, graph).sum().backward()

    res["ctc_loss_s"] = best_time(run_ctc, max(3, r))
    res["lfmmi_loss_s"] = best_time(run_lfmmi, max(3, r))
    res["lfmmi_den_only_s"] = best_time(run_den, max(3, r))
    res["lfmmi_ratio"] = res["lfmmi_loss_s"] / res["ctc_loss_s"]
    res["lfmmi_den_ratio"] = res["lfmmi_den_only_s"] / res["ctc_loss_s"]
    res["den_graph"] = {"states": graph.num_states, "arcs": int(graph.src.numel()), "vocab": len(tok)}
    return res


def measure(out: Path, cfg: BenchConfig) -> Dict:
    torch.set_num_threads(1)
    names = [j["name"] for j in student_jobs(cfg)]
    t0 = time.perf_counter()
    speed = speed_and_latency(out, cfg, names)
    log.info("speed and latency measured in %.0f s", time.perf_counter() - t0)
    return {"speed": speed, "training": training_cost(out, cfg)}
