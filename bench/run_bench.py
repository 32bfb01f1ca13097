"""Benchmark: the zoo's HuBERT CTC teacher vs distilled streaming students (WER x latency x size x speed).

Stages (each writes ``<out>/stages/<stage>.json`` when done and is skipped when it exists; a killed run
resumes, mid-training included, from partial checkpoints):

1. ``data``: synthetic corpus (grammar text; test voices unseen in training) + FSDD (real, 16 kHz);
2. ``teacher``: the zoo teacher (``zoo/hubert_mini_ctc``, fairseq): parameters, shape and sha256 (not trained here);
3. ``teacher_eval``: its WER on synthetic valid/test and FSDD test;
4. ``cache``: the teacher's targets (mapped layers + CTC logits, fp16) for the whole training set;
5. ``students``: every student of the suite (main: layer KD and from scratch at 480/160 ms and full context,
   the low-resource pair and the convergence check at 480 ms; methods: the other methods), two at a time in worker
   processes with one thread each, KD targets read from the cache; each is scored (WER) when trained (the rnnt
   suite's hard-target students first get their teacher's 1-best, kept in ``<out>/pseudo``);
6. ``measure``: one process, one thread: parameters, RTF, streaming latency, training-step cost, LF-MMI vs CTC;
7. report (always redone from the stage files): ``summary.md``, ``results.json`` and PNG plots.

Usage: ``bench/run.sh [--quick | --smoke] [--suite main|methods|rnnt] [--out DIR] [--results DIR] [--redo STAGE]``
(``make bench``, ``make bench-quick``, ``make bench-methods``, ``make bench-rnnt``). Defaults: ``--out exp/bench[-quick|-smoke][-methods]``;
results in ``bench/results`` (``bench/results/methods`` for the methods suite) for the full run, ``<out>/results``
otherwise. The methods suite (issue 14's methods and the shape presets at 480 ms, same budget as layer KD, with its
own layer-KD and scratch references) runs on its own data and cache, so either suite fits the 150 min budget.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

from kd_core.atomic import atomic_write_text

from .bench_config import SUITES, BenchConfig, get_config

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("bench")
STAGES = ("data", "teacher", "teacher_eval", "cache", "students", "measure")
#: what each stage leaves in the work dir (removed by ``--redo`` for that stage and every later one)
STAGE_OUTPUTS = {"data": ["lists"], "teacher": [], "teacher_eval": [],
                 "cache": ["cache", "cache_codebook"], "students": [], "measure": []}  # students: see redo()


def say(msg: str) -> None:
    """Driver progress on stdout (the run's own output; libraries log)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class StageRunner:
    """Runs a stage unless its marker ``<out>/stages/<name>.json`` exists; records wall time and result."""

    def __init__(self, out: Path):
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)

    def marker(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def load(self, name: str):
        p = self.marker(name)
        return json.loads(p.read_text()) if p.exists() else None

    def run(self, name: str, fn, note: str = ""):
        done = self.load(name)
        if done is not None:
            say(f"stage {name}: done earlier ({done['seconds']:.0f} s), skipped")
            return done["result"]
        started = self.dir / f".{name}.started"
        resumed = started.exists()  # an earlier run started this stage and was interrupted
        atomic_write_text(started, time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
        say(f"stage {name}: {'resuming' if resumed else 'running'}")
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        note += " (resumed after an interruption: time of the last run only)" if resumed else ""
        atomic_write_text(self.marker(name), json.dumps({"seconds": round(seconds, 1), "finished": time.strftime(
            "%Y-%m-%dT%H:%M:%S"), "note": note.strip(), "result": result}, indent=1) + "\n")
        started.unlink(missing_ok=True)
        say(f"stage {name}: done in {seconds:.0f} s")
        return result


def redo(out: Path, cfg: BenchConfig, stage: str) -> None:
    """Forget ``stage`` and every later stage: markers and their outputs (the corpus audio is kept)."""
    from .bench_train import student_jobs

    outputs = dict(STAGE_OUTPUTS)
    outputs["students"] = ["scores", "den_graph", "pseudo"] + [f"models/{j['name']}{ext}" for j in student_jobs(cfg)
                                                     for ext in (".pt", ".partial.pt")]
    for st in STAGES[STAGES.index(stage):]:
        (out / "stages" / f"{st}.json").unlink(missing_ok=True)
        (out / "stages" / f".{st}.started").unlink(missing_ok=True)
        for rel in outputs[st]:
            path = out / rel
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    say(f"--redo {stage}: removed the results of {', '.join(STAGES[STAGES.index(stage):])}")


def check_config(out: Path, cfg: BenchConfig, accept: bool = False) -> None:
    """A work dir belongs to one configuration: resuming with another one would mix results (``accept``:
    ``--redo`` was given, the new configuration replaces the old one)."""
    import dataclasses

    path = out / "config.json"
    now = json.loads(json.dumps(cfg.to_dict()))
    if path.exists() and not accept:
        # a field added since the run was made counts as its default (the run did what the default does)
        defaults = {f.name: f.default for f in dataclasses.fields(BenchConfig) if f.default is not dataclasses.MISSING}
        old = {**json.loads(json.dumps(defaults)), **json.loads(path.read_text())}
        if {k: v for k, v in old.items() if k != "jobs"} != {k: v for k, v in now.items() if k != "jobs"}:
            diff = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
            sys.exit(f"error: {out} holds a run with another configuration ({', '.join(diff)}); use another --out, "
                     "delete it, or --redo the first stage the change affects")
    else:
        atomic_write_text(path, json.dumps(now, indent=1) + "\n")


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: a daemon thread ends the worker when the driver is gone (killed by a signal other
    than Ctrl-C), so an orphan never keeps training and writing into a work dir a later run owns."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_students(out: Path, cfg: BenchConfig):
    """Train and score every student, ``cfg.jobs`` at a time in spawned worker processes (1 thread each)."""
    from .bench_train import expected_cost, run_student_job, student_jobs

    jobs = student_jobs(cfg)
    pending, running, done = sorted(jobs, key=lambda j: -expected_cost(j)), {}, {}  # longest first; stable otherwise
    (out / "logs").mkdir(exist_ok=True)
    (out / "scores").mkdir(exist_ok=True)
    with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=get_context("spawn"), initializer=_exit_with_parent,
                             initargs=(os.getpid(),)) as ex:
        while pending or running:
            for job in list(pending):
                if len(running) >= cfg.jobs:
                    break
                if all(d in done for d in job["depends"]):
                    running[ex.submit(run_student_job, str(out), cfg, job)] = job
                    pending.remove(job)
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                job = running.pop(fut)
                sc = done[job["name"]] = fut.result()
                say(f"  student {job['name']} ({len(done)}/{len(jobs)}): WER synth {sc['test']['wer']:.1f}, FSDD "
                    f"{sc['fsdd_test']['wer']:.1f}; {sc['train']['steps']} steps, {sc['train']['sec_per_step']:.2f} s/step")
    return {j["name"]: done[j["name"]] for j in jobs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="mode", help="<= 10 min: smaller everything")
    size.add_argument("--smoke", action="store_const", const="smoke", dest="mode", help="1-3 min plumbing run (tests)")
    p.add_argument("--out", help="work dir (corpus, checkpoints, cache); default exp/bench[-quick|-smoke]")
    p.add_argument("--results", help="summary.md + plots; default bench/results (full run) or <out>/results")
    p.add_argument("--fsdd-dir", default=str(ROOT.parent / "shared/data/fsdd"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="student trainings in parallel (1 thread each)")
    p.add_argument("--redo", choices=STAGES, help="forget this stage and all later ones, then run")
    p.add_argument("--suite", choices=SUITES, default="main", help="main: KD vs scratch (chunk sweep, low resource, "
                   "methods of the main table); methods: HuBERT-disc, front-end KD, SEW and the shape presets at 480 ms; "
                   "rnnt: transducer students, soft vs hard targets (low resource, 480 ms)")
    a = p.parse_args(argv)
    mode = a.mode or "full"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("kd_core.students.model").setLevel(logging.WARNING)  # one line per student built
    cfg = get_config(mode, seed=a.seed, jobs=a.jobs, suite=a.suite)
    suffix = ("" if mode == "full" else "-" + mode) + ("" if a.suite == "main" else "-" + a.suite)
    out = Path(a.out or f"exp/bench{suffix}").resolve()
    default_results = ROOT / "bench" / "results" / ("" if a.suite == "main" else a.suite)
    results = Path(a.results).resolve() if a.results else (default_results if mode == "full" else out / "results")
    out.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    for d in ("models", "logs"):
        (out / d).mkdir(exist_ok=True)
    check_config(out, cfg, accept=bool(a.redo))
    if a.redo:
        redo(out, cfg, a.redo)
    command = os.environ.get("BENCH_COMMAND") or "python -m bench.run_bench " + " ".join(argv if argv is not None else sys.argv[1:])
    say(f"{mode} run: work dir {out}, results {results}")

    import torch

    from .bench_data import prepare_data
    from .bench_train import build_teacher_cache, describe_teacher, evaluate_teacher

    torch.set_num_threads(2)
    stages = StageRunner(out)
    data_info = stages.run("data", lambda: prepare_data(out, cfg, a.fsdd_dir))
    teacher_info = stages.run("teacher", lambda: describe_teacher(cfg), note=f"{cfg.teacher_path}, loaded, not trained")
    teacher_eval = stages.run("teacher_eval", lambda: evaluate_teacher(out, cfg))
    say(f"teacher: {teacher_info['params'] / 1e6:.2f}M params; WER valid {teacher_eval['valid']['wer']:.1f}, test "
        f"{teacher_eval['test']['wer']:.1f}, FSDD {teacher_eval['fsdd_test']['wer']:.1f}")
    cache_info = stages.run("cache", lambda: build_teacher_cache(out, cfg), note="2 threads")
    scores = stages.run("students", lambda: run_students(out, cfg), note=f"{cfg.jobs} processes x 1 thread")
    from .bench_measure import measure

    measured = stages.run("measure", lambda: measure(out, cfg), note="1 thread")

    from .bench_report import STAGE_ORDER, write_report

    stage_info = {st: {k: v for k, v in (stages.load(st) or {}).items() if k != "result"} for st in STAGE_ORDER}
    total = sum(s.get("seconds", 0.0) for s in stage_info.values())
    text = write_report(out, results, cfg, command, stage_info, data_info, teacher_info, teacher_eval, cache_info, scores,
                        measured, total)
    keep = text.split("## Training cost")[0].split("## Results", 1)[1]
    print("\n## Results" + keep, flush=True)
    say(f"summary: {results / 'summary.md'}; total stage time {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    from kd_core.errors import KDConfigError

    try:
        sys.exit(main())
    except KDConfigError as e:  # bad input (e.g. --fsdd-dir): one line, no traceback
        sys.exit(f"bench: error: {e}")
