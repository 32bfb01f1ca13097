"""End to end: bench/run.sh --smoke (corpus -> teacher -> cache -> every student -> measurements -> report), resumable."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDENTS = (["scratch_480ms_x2"] + [f"{kind}_{tag}" for tag in ("480ms", "160ms", "full") for kind in ("layer_kd", "scratch")]
            + ["lowres_layer_kd_480ms", "lowres_scratch_480ms"])
NOT_BUILT = {k: "in the methods suite" for k in ("aux_apc", "lfmmi", "twostage", "hubert_disc", "frontend_kd", "sew_student")}
NOT_BUILT["rnnt_kd"] = "in the rnnt suite"
STAGES = ["data", "teacher", "teacher_eval", "cache", "students", "measure"]


def _run(out: Path, *extra: str) -> str:
    env = dict(os.environ, PYTHON=sys.executable)
    res = subprocess.run(["bash", str(ROOT / "bench/run.sh"), "--smoke", "--out", str(out), *extra], check=True,
                         capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=600)
    return res.stdout


def _table_rows(text: str, heading: str):
    """Body rows of the first markdown table after ``heading`` (cells stripped)."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[c.strip() for c in line.split("|")[1:-1]] for line in lines[start + 2 : end]]


@pytest.mark.slow
def test_bench_smoke_end_to_end_and_resume(tmp_path):
    out = tmp_path / "bench"
    stdout = _run(out)
    summary = (out / "results/summary.md").read_text()
    assert "## Results" in stdout and "## Targets" in stdout
    rows = _table_rows(summary, "## Results")
    assert [r[0] for r in rows] == ["teacher"] + STUDENTS + list(NOT_BUILT)
    header = next(line for line in summary.split("## Results", 1)[1].splitlines() if line.startswith("|"))
    cols = [c.strip() for c in header.split("|")[1:-1]]
    for r in rows:
        if r[0] in NOT_BUILT:
            assert r[3] == NOT_BUILT[r[0]]
            continue
        wer, wer_fsdd = float(r[cols.index("WER synth")]), float(r[cols.index("WER FSDD")])
        assert math.isfinite(wer) and math.isfinite(wer_fsdd) and wer >= 0 and wer_fsdd >= 0
        assert float(r[cols.index("params (M)")]) > 0
    lat = {r[0]: r[cols.index("alg. latency (ms)")] for r in rows}
    assert lat["teacher"] == lat["layer_kd_full"] == "inf" and float(lat["layer_kd_480ms"]) == 525  # 480 + 45 ms front-end
    targets = _table_rows(summary, "## Targets")
    assert len(targets) >= 8 and all(t[3] in ("yes", "NO", "not counted") for t in targets)
    for needle in ("12x smaller", "8x faster", "<= 9 %", "15 % relative better", "1.2x a plain step", "3x CTC", "RTF <= 0.05"):
        assert any(needle in t[0] for t in targets), needle
    # a degradation-vs-teacher target counts only where the teacher beats the scratch student at that chunk
    wer = {r[0]: (float(r[cols.index("WER synth")]), float(r[cols.index("WER FSDD")])) for r in rows if r[0] not in NOT_BUILT}
    for t in targets:
        if "<= 9 %" in t[0]:
            k = 0 if "synthetic" in t[0] else 1
            assert (t[3] == "not counted") == (wer["teacher"][k] >= wer["scratch_160ms"][k]), t
    assert "## Does distilling help?" in summary and "Convergence check: the 480 ms scratch student" in summary
    assert "no verdict: the student has not learnt yet" in summary  # 4 smoke steps: WER ~100 % is not convergence
    assert "zoo/hubert_mini_ctc/hubert_mini_ctc.pt" in summary
    for name in ("torch", "torchaudio", "espnet", "fairseq", "CPU cores", "## Wall time per stage", "bench/run.sh --smoke"):
        assert name in summary
    for png in ("wer_vs_latency.png", "wer_vs_params.png", "rtf.png"):
        data = (out / "results" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    results = json.loads((out / "results/results.json").read_text())
    assert {t["target"] for t in results["targets"]} == {t[0] for t in targets}

    # low resource: KD reads all the audio and is paired, so it trains on exactly the scratch student's labelled batches
    from bench.bench_config import get_config
    from bench.bench_train import student_jobs

    low = {n: json.loads((out / f"scores/lowres_{n}_480ms.json").read_text()) for n in ("layer_kd", "scratch")}
    assert low["layer_kd"]["train"]["labelled"] == low["scratch"]["train"]["labelled"] == low["scratch"]["train"]["utterances"]
    assert low["layer_kd"]["train"]["utterances"] > low["layer_kd"]["train"]["labelled"] and low["layer_kd"]["job"]["paired"]
    assert [j.get("paired", False) for j in student_jobs(get_config("full")) if j.get("labels")] == [True, False]

    # a second run skips every stage and retrains nothing
    models = {p.name: p.stat().st_mtime_ns for p in (out / "models").glob("*.pt")}
    assert set(models) == {f"{s}.pt" for s in STUDENTS}  # the teacher is the zoo's: nothing trained or copied
    markers = {s: (out / "stages" / f"{s}.json").read_text() for s in STAGES}
    stdout2 = _run(out)
    assert all(f"stage {s}: done earlier" in stdout2 for s in STAGES)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "models").glob("*.pt")} == models
    assert {s: (out / "stages" / f"{s}.json").read_text() for s in STAGES} == markers
    assert not list(out.rglob("*.partial.pt")) and not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_bench_methods_suite_smoke(tmp_path):
    """``--suite methods``: layer KD into every shape preset (SEW included), the HuBERT discriminative loss (targets
    from the pre-trained teacher's own cache, its codebook from the model), front-end KD A -> B, aux + APC, LF-MMI and
    two-stage, next to layer KD and scratch at 480 ms, with the methods table."""
    from bench.bench_config import PRESET_ROWS

    out = tmp_path / "bench"
    _run(out, "--suite", "methods")
    summary = (out / "results/summary.md").read_text()
    rows = _table_rows(summary, "## Results")
    presets = [f"layer_kd_480ms_{s}" for s in PRESET_ROWS]
    assert [r[0] for r in rows] == ["teacher", "scratch_480ms", "layer_kd_480ms"] + presets + [
        "hubert_disc_480ms", "frontend_a", "frontend_kd_480ms", "aux_apc_480ms", "lfmmi_480ms", "twostage1_full", "twostage2_480ms"]
    params = {r[0]: float(r[4]) for r in rows}
    assert params["layer_kd_480ms_s12_sew"] > params["layer_kd_480ms_s12_deep"]  # + the learnt upsampling
    assert params["layer_kd_480ms_s4_wide"] > params["layer_kd_480ms_s8_wide"] > params["layer_kd_480ms_s12_deep"]
    assert len(_table_rows(summary, "## Methods and shapes at 480 ms")) == len(rows) - 1
    import torch

    curve = {n: torch.load(out / f"models/{n}.pt", weights_only=False)["train"]["curve"] for n in ("hubert_disc_480ms", "frontend_a")}
    assert all("kd_disc" in c for c in curve["hubert_disc_480ms"]) and list((out / "cache_codebook").iterdir())
    assert all("kd_l1_t0s0" in c and "ctc" not in c for c in curve["frontend_a"])  # stage A: teacher layer 0, no ASR loss


def test_redo_forgets_a_stage_and_every_later_one(tmp_path, capsys):
    """``--redo STAGE``: that stage's and later stages' markers and outputs go; earlier ones stay. A stage
    whose marker exists is skipped; one started but not finished is reported as resumed."""
    from bench.bench_config import get_config
    from bench.bench_train import student_jobs
    from bench.run_bench import STAGES, StageRunner, redo

    cfg = get_config("smoke")
    runner = StageRunner(tmp_path)
    for st in STAGES:
        runner.run(st, lambda st=st: {"stage": st})
    files = ["lists/tokens.txt", "cache/shards/0.npy", "scores/x.json", "den_graph/g.pt"]
    files += [f"models/{j['name']}.pt" for j in student_jobs(cfg)] + ["models/layer_kd_480ms.partial.pt"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    redo(tmp_path, cfg, "cache")
    assert [st for st in STAGES if runner.load(st) is not None] == ["data", "teacher", "teacher_eval"]
    assert (tmp_path / "lists/tokens.txt").exists()
    assert not (tmp_path / "cache").exists() and not (tmp_path / "scores").exists()
    assert not list((tmp_path / "models").iterdir())
    capsys.readouterr()
    assert runner.run("teacher", lambda: 1 / 0) == {"stage": "teacher"}  # done earlier: not run again
    (tmp_path / "stages" / ".cache.started").write_text("")  # a run was killed during the cache stage
    assert runner.run("cache", lambda: {"again": True}) == {"again": True}
    out = capsys.readouterr().out
    assert "stage teacher: done earlier" in out and "stage cache: resuming" in out
    assert "resumed after an interruption" in runner.load("cache")["note"]


def test_wer_is_greedy_ctc_scored_with_jiwer():
    """The bench's WER column: perfect CTC paths score 0 %, an all-blank model 100 %, one wrong word 50 %."""
    import torch

    from bench.bench_train import evaluate
    from kd_core.data import CharTokenizer

    data = [("a", torch.zeros(1600), "ONE TWO"), ("b", torch.zeros(3200), "NINE")]  # corpus texts are upper case
    tok = CharTokenizer.from_texts([t for *_, t in data])
    texts = {w.numel(): t for _, w, t in data}

    def paths(wav, wl, text_of):
        rows = []
        for n in wl.tolist():
            ids = tok.encode(text_of(texts[n]))
            rows.append([0] + [x for i in ids for x in (i, 0)])  # blank, token, blank, ...
        t = max(len(r) for r in rows)
        logits = torch.full((len(rows), t, len(tok)), -10.0)
        for b, r in enumerate(rows):
            logits[b, torch.arange(t), torch.tensor(r + [0] * (t - len(r)))] = 10.0
        return logits, torch.tensor([len(r) for r in rows])

    assert evaluate(lambda w, l: paths(w, l, lambda s: s), data, tok)["wer"] == 0.0
    assert evaluate(lambda w, l: paths(w, l, lambda s: ""), data, tok)["wer"] == 100.0
    half = evaluate(lambda w, l: paths(w, l, lambda s: s.replace("TWO", "TEN")), data, tok)
    assert half["wer"] == pytest.approx(100 / 3) and half["n"] == 2  # 1 of 3 reference words


def test_kd_throughput_rows_share_their_batches_and_the_cache_holds_every_utterance(tmp_path, tiny_teachers):
    """``bench.kd_throughput``: the cached row reads every utterance from the cache it just built (mode ``read``
    refuses a missing one), all rows train on the same audio, and the break-even is the build time over the
    per-epoch saving."""
    from bench.kd_throughput import break_even_epochs, main

    res = main(["--teacher", str(tiny_teachers["fairseq_hubert"]), "--layer_map", "1:1,2:2", "--utts", "8", "--batch", "4",
                "--threads", "1", "--shapes", "fbank", "--work", str(tmp_path), "--out", str(tmp_path / "r.md")])
    rows = res["rows"]
    assert sorted(m for _, m in rows) == ["kd_cache", "kd_online", "plain"]
    assert len({round(r["audio_s"], 6) for r in rows.values()}) == 1 and math.isclose(rows[("fbank", "plain")]["audio_s"], res["audio_s"])
    assert len({r["params"] for r in rows.values()}) == 1
    assert all(r["peak_mb"] >= r["setup_mb"] > 0 and r["audio_per_s"] > 0 for r in rows.values())
    assert break_even_epochs(10.0, 7.0, 2.0) == 2.0 and break_even_epochs(10.0, 2.0, 2.0) == math.inf
    on, ca = (res["audio_s"] / rows[("fbank", m)]["audio_per_s"] for m in ("kd_online", "kd_cache"))
    report = (tmp_path / "r.md").read_text()
    assert f"pays for itself after {break_even_epochs(res['build_s'], on, ca):.2f} epochs" in report
    assert json.loads((tmp_path / "r.json").read_text())["fbank/kd_cache"]["audio_s"] == rows[("fbank", "kd_cache")]["audio_s"]


def test_a_work_dir_belongs_to_one_configuration(tmp_path):
    """Resuming with another configuration is refused (results would mix); a field added since the run was made
    counts as its default, so an older run's work dir still resumes; ``--redo`` accepts the new configuration."""
    from bench.bench_config import get_config
    from bench.run_bench import check_config

    cfg = get_config("smoke")
    check_config(tmp_path, cfg)
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["suite"]  # a run made before the field existed
    (tmp_path / "config.json").write_text(json.dumps(stored))
    check_config(tmp_path, cfg)
    with pytest.raises(SystemExit, match="another configuration .*suite"):
        check_config(tmp_path, get_config("smoke", suite="methods"))
    with pytest.raises(SystemExit, match="another configuration .*student_steps"):
        check_config(tmp_path, get_config("quick"))
    check_config(tmp_path, get_config("quick"), accept=True)
    assert json.loads((tmp_path / "config.json").read_text())["mode"] == "quick"


@pytest.mark.slow
def test_bench_rnnt_suite_smoke(tmp_path):
    """``--suite rnnt``: a non-streaming transducer teacher, the streaming transducer from scratch on the labelled share,
    soft targets (collapsed-lattice KL) and hard targets (1-best of the transducer teacher, of the zoo CTC teacher, and
    of the scratch student for self-training), with the soft-vs-hard table."""
    import torch

    out = tmp_path / "bench"
    _run(out, "--suite", "rnnt")
    summary = (out / "results/summary.md").read_text()
    names = ["rnnt_teacher_full", "rnnt_scratch_480ms", "rnnt_soft_480ms", "rnnt_hard_480ms", "rnnt_hard_zoo_480ms",
             "rnnt_self_soft_480ms", "rnnt_self_hard_480ms"]
    assert [r[0] for r in _table_rows(summary, "## Results")] == ["teacher"] + names
    table = _table_rows(summary, "## RNN-T: soft vs hard targets")
    assert [r[0] for r in table] == names
    trained = {n: torch.load(out / f"models/{n}.pt", weights_only=False)["train"] for n in names}
    assert all("rnnt_kl" in c for c in trained["rnnt_soft_480ms"]["curve"])
    assert not any("rnnt_kl" in c for c in trained["rnnt_hard_480ms"]["curve"])
    scores = {n: json.loads((out / f"scores/{n}.json").read_text())["train"] for n in names}
    # hard targets: the unlabelled audio gets transcripts (minus empty 1-bests); scratch trains on the labelled share
    assert scores["rnnt_scratch_480ms"]["utterances"] == scores["rnnt_scratch_480ms"]["labelled"]
    assert scores["rnnt_hard_zoo_480ms"]["labelled"] == scores["rnnt_hard_zoo_480ms"]["utterances"]
    assert scores["rnnt_soft_480ms"]["labelled"] == scores["rnnt_scratch_480ms"]["labelled"]
    assert scores["rnnt_soft_480ms"]["utterances"] == scores["rnnt_teacher_full"]["utterances"]  # soft reads every utterance
    assert {p.stem for p in (out / "pseudo").glob("*.json")} == {"rnnt_teacher_full", "zoo", "rnnt_scratch_480ms"}


def test_paired_batches_give_the_soft_student_the_scratch_students_labelled_batches():
    """A ``paired`` job's step = the from-scratch student's labelled batch (same utterances, same order) + unlabelled
    audio of the same duration, so KD adds information without taking supervised data away."""
    import itertools

    import torch

    from bench.bench_config import get_config
    from bench.bench_data import duration_batches
    from bench.bench_train import job_batches

    cfg = get_config("smoke", suite="rnnt")
    train = [(f"u{i:03d}", torch.zeros(1600 * (1 + i % 7)), "A") for i in range(60)]
    labelled = set(range(0, 60, 10))
    scratch = list(itertools.islice(duration_batches([train[i] for i in sorted(labelled)], cfg.student_batch_s, cfg.seed), 5))
    paired = list(itertools.islice(job_batches(train, labelled, {"paired": True}, cfg), 5))
    lab = sorted(labelled)
    for s, p in zip(scratch, paired):
        assert [i for i in p if i in labelled] == [lab[i] for i in s]
        assert any(i not in labelled for i in p)
