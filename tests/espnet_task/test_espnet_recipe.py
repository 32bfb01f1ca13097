"""The debug-size egs2 recipe runs end to end (data -> tokenizer -> stats -> zoo teacher -> KD + scratch students -> decode
-> score) and resumes after a kill; the recipe's own teacher stage and every method on it; a noisy-student round."""
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import ROOT

ZOO_CTC = ROOT / "zoo/hubert_mini_ctc/hubert_mini_ctc.pt"


ENV = {**os.environ, "KD_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore",
       "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
HAS_FSDD = (ROOT.parent / "shared/data/fsdd/recordings").is_dir()


def _recipe(root):
    """A fresh copy of the recipe (no data/, dump/, exp/) at ``root/egs2/kd_synth/asr1``."""
    recipe = root / "egs2" / "kd_synth" / "asr1"
    shutil.copytree(ROOT / "egs2" / "kd_synth" / "asr1", recipe, ignore=shutil.ignore_patterns("data", "dump", "exp"))
    return recipe


def _run(recipe, script, *args):
    """``./script --debug true --python <this python> *args`` in ``recipe``; fails the test with its stderr's tail."""
    proc = subprocess.run([f"./{script}", *args, "--debug", "true", "--python", sys.executable], cwd=recipe, env=ENV,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{script} {' '.join(args)}:\n{proc.stderr[-4000:]}"
    return proc


def _results(recipe):
    return [[c.strip() for c in r.split("|")[1:-1]] for r in (recipe / "exp/RESULTS.md").read_text().splitlines()[2:]]


@pytest.mark.slow(minutes=12)
def test_debug_recipe_end_to_end(tmp_path):
    recipe = _recipe(tmp_path)
    _run(recipe, "run.sh")
    table = {(r[0], r[1], r[2]): r for r in _results(recipe)}  # model, decoding, test set -> row
    tests = ["test_synth"] + (["test_fsdd"] if HAS_FSDD else [])
    assert ("teacher_hubert_mini_ctc", "offline", "test_fsdd") in table if HAS_FSDD else not any(k[2] == "test_fsdd" for k in table)
    zoo_params = sum(v.numel() for v in torch.load(ZOO_CTC, weights_only=False)["model"].values()) / 1e6
    for t in tests:
        # the default teacher is the shipped zoo model, decoded through load_teacher; its size is the checkpoint's
        assert abs(float(table[("teacher_hubert_mini_ctc", "offline", t)][3]) - zoo_params) < 0.01
        for student in ("asr_kd_student", "asr_kd_student_scratch"):
            # chunk-by-chunk streaming decoding equals the offline (masked) decoding of the same student
            assert table[(student, "offline", t)][6] == table[(student, "streaming", t)][6]
            assert float(table[(student, "streaming", t)][8]) > 0  # RTF from the decoding's wall time
    kd_cfg = yaml.safe_load((recipe / "exp/asr_kd_student/config.yaml").read_text())
    scratch_cfg = yaml.safe_load((recipe / "exp/asr_kd_student_scratch/config.yaml").read_text())
    assert kd_cfg["teacher_type"] == "fairseq" and kd_cfg["teacher_path"] == str(ZOO_CTC)
    assert kd_cfg["model_conf"]["kd_weight"] > 0 and scratch_cfg["model_conf"]["kd_weight"] == 0
    assert (recipe / "exp/asr_kd_student/export/config.yaml").exists()
    _killed_at_a_random_point_and_rerun_equals(recipe, tmp_path / "killed")
    # rerunning a finished stage range resumes: decodings newer than their models are kept, and training stages find
    # their checkpoints and do not retrain
    done = {p: p.stat().st_mtime_ns for p in (recipe / "exp").glob("*/decode_*/*/decode_seconds")}
    assert len(done) == len(tests) * 5  # the teacher, and two students offline + streaming
    proc = _run(recipe, "run.sh", "--stage", "8", "--stop_stage", "8")
    assert proc.stderr.count("up to date: ") == len(done) and "asr_kd_inference" not in proc.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())
    before = (recipe / "exp/asr_kd_student/checkpoint.pth").stat().st_mtime_ns
    _run(recipe, "run.sh", "--stage", "6", "--stop_stage", "6")
    assert (recipe / "exp/asr_kd_student/checkpoint.pth").stat().st_mtime_ns == before
    if not HAS_FSDD:  # everything else was checked; say what was not
        pytest.skip(f"{ROOT.parent / 'shared/data/fsdd'} missing: the recipe's real-speech (FSDD) test set was not checked")


@pytest.mark.slow(minutes=10)
def test_recipe_teacher_stage_and_every_method(tmp_path):
    recipe = _recipe(tmp_path)
    _run(recipe, "run.sh", "--stop_stage", "4")
    # the recipe's own teacher stage stays, behind --teacher_path "" (and is what run_methods.sh compares methods on)
    _run(recipe, "run.sh", "--teacher_path", "", "--teacher_type", "espnet", "--stage", "5", "--stop_stage", "5")
    assert (recipe / "exp/asr_teacher/teacher.zip").stat().st_size > 0
    # every method on the same teacher and budget, into one table with each model's latency (one test set: the
    # two-test-set decoding is the first test's)
    proc = _run(recipe, "run_methods.sh", "--test_sets", "test_synth")
    rows = _results(recipe)
    models = {r[0] for r in rows}
    assert {f"asr_kd_student{t}" for t in ("_scratch", "_layerwise", "_aux_apc", "_lfmmi", "_stage2", "_frontend_b")} <= models
    assert "asr_teacher" in models  # the methods' teacher, decoded with ESPnet's asr_inference ...
    decodes = [line for line in proc.stderr.splitlines() if "(asr_kd.sh)" in line and "espnet2.bin.asr_inference" in line]
    assert len(decodes) == 1  # ... once for all the methods
    assert all(r[4] == "525" for r in rows if r[0].startswith("asr_kd_student"))  # 480 ms chunk + 45 ms front-end
    assert (recipe / "exp/asr_kd_student_stage1/stage1.zip").exists()


@pytest.mark.slow(minutes=5)
def test_noisy_student_round(tmp_path):
    # hard targets: a noisy-student round (the zoo teacher labels the FSDD train audio outside data/train; without FSDD
    # the valid audio stands in), then the same student trains on labels + pseudo-labels with SpecAugment, no teacher
    recipe = _recipe(tmp_path)
    _run(recipe, "run.sh", "--stop_stage", "4")
    _run(recipe, "run_noisy_student.sh", *([] if HAS_FSDD else ["--unlabelled", "data/valid"]))
    lines = lambda p: (recipe / p).read_text().splitlines()  # noqa: E731
    assert 0 < len(lines("data/train_pl1_unlab/text")) and len(lines("data/train_pl1/text")) == len(lines("data/train/text")) + len(
        lines("data/train_pl1_unlab/text"))
    noisy = yaml.safe_load((recipe / "exp/asr_kd_student_noisy1/config.yaml").read_text())
    assert noisy["specaug"] == "specaug" and noisy["model_conf"]["kd_weight"] == 0
    assert any("dump/raw/train_pl1/text" in p[0] for p in noisy["train_data_path_and_name_and_type"])
    assert "asr_kd_student_noisy1" in {r[0] for r in _results(recipe)}
    assert (recipe / "exp/asr_kd_student_noisy1/packed.zip").stat().st_size > 0  # the next round's teacher


def _killed_at_a_random_point_and_rerun_equals(whole, tmp):
    """SIGKILL to the whole recipe (bash and its python children) inside a random stage 1-7; running the same command
    again finishes it, and its students and decodings equal the uninterrupted run's (``whole``)."""
    recipe = _recipe(tmp)
    rng = random.Random(os.getpid())
    stage, delay = rng.randint(1, 7), rng.uniform(0, 2)
    cmd = ["./run.sh", "--debug", "true", "--python", sys.executable]
    with open(tmp / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=recipe, env=ENV, stdout=log, stderr=log, start_new_session=True)
        deadline = time.time() + 900
        while proc.poll() is None and time.time() < deadline and f"Stage {stage}:" not in (tmp / "killed.log").read_text():
            time.sleep(0.05)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the recipe ended before the kill in stage {stage} (+{delay:.1f} s)"
    rerun = subprocess.run(cmd, cwd=recipe, env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, f"killed in stage {stage} (+{delay:.1f} s); the re-run failed:\n{rerun.stderr[-3000:]}"
    for student in ("asr_kd_student", "asr_kd_student_scratch"):
        a = torch.load(whole / "exp" / student / "valid.loss.ave.pth", map_location="cpu")
        b = torch.load(recipe / "exp" / student / "valid.loss.ave.pth", map_location="cpu")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{student} differs (killed in stage {stage})"
    texts = sorted(p.relative_to(whole) for p in (whole / "exp").glob("*/decode_*/*/1best_recog/text"))
    assert texts and texts == sorted(p.relative_to(recipe) for p in (recipe / "exp").glob("*/decode_*/*/1best_recog/text"))
    assert all((whole / t).read_text() == (recipe / t).read_text() for t in texts), f"decodings differ (killed in stage {stage})"
