"""The debug-size egs2 recipe runs end to end (data -> tokenizer -> stats -> zoo teacher -> KD + scratch students -> decode
-> score), every method on it, and the recipe's own teacher stage."""
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


@pytest.mark.slow
def test_debug_recipe_end_to_end(tmp_path):
    recipe = tmp_path / "egs2" / "kd_synth" / "asr1"
    shutil.copytree(ROOT / "egs2" / "kd_synth" / "asr1", recipe, ignore=shutil.ignore_patterns("data", "dump", "exp"))
    env = {**os.environ, "KD_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore",
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["./run.sh", "--debug", "true", "--python", sys.executable], cwd=recipe, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [[c.strip() for c in r.split("|")[1:-1]] for r in (recipe / "exp/RESULTS.md").read_text().splitlines()[2:]]
    table = {(r[0], r[1], r[2]): r for r in rows}  # model, decoding, test set -> row
    has_fsdd = (ROOT.parent / "shared/data/fsdd/recordings").is_dir()
    tests = ["test_synth"] + (["test_fsdd"] if has_fsdd else [])
    assert ("teacher_hubert_mini_ctc", "offline", "test_fsdd") in table if has_fsdd else not any(k[2] == "test_fsdd" for k in table)
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
    _killed_at_a_random_point_and_rerun_equals(recipe, tmp_path / "killed", env)
    # rerunning a finished stage range resumes: training stages find their checkpoints and do not retrain
    before = (recipe / "exp/asr_kd_student/checkpoint.pth").stat().st_mtime_ns
    subprocess.run(["./run.sh", "--debug", "true", "--python", sys.executable, "--stage", "6", "--stop_stage", "6"],
                   cwd=recipe, env=env, capture_output=True, text=True, check=True)
    assert (recipe / "exp/asr_kd_student/checkpoint.pth").stat().st_mtime_ns == before
    # the recipe's own teacher stage stays, behind --teacher_path "" (and is what run_methods.sh compares methods on)
    subprocess.run(["./run.sh", "--debug", "true", "--python", sys.executable, "--teacher_path", "", "--teacher_type", "espnet",
                    "--stage", "5", "--stop_stage", "5"], cwd=recipe, env=env, capture_output=True, text=True, check=True)
    assert (recipe / "exp/asr_teacher/teacher.zip").stat().st_size > 0
    # every method on the same teacher and budget, into one table with each model's latency
    proc = subprocess.run(["./run_methods.sh", "--debug", "true", "--python", sys.executable], cwd=recipe, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [[c.strip() for c in r.split("|")[1:-1]] for r in (recipe / "exp/RESULTS.md").read_text().splitlines()[2:]]
    models = {r[0] for r in rows}
    assert {f"asr_kd_student{t}" for t in ("", "_layerwise", "_scratch", "_aux_apc", "_lfmmi", "_stage2")} <= models
    assert "asr_teacher" in models  # the methods' teacher, decoded with ESPnet's asr_inference
    assert all(r[4] == "525" for r in rows if r[0].startswith("asr_kd_student"))  # 480 ms chunk + 45 ms front-end
    assert (recipe / "exp/asr_kd_student_stage1/stage1.zip").exists()
    # hard targets: a noisy-student round (the zoo teacher labels the FSDD train audio outside data/train; without FSDD
    # the valid audio stands in), then the same student trains on labels + pseudo-labels with SpecAugment, no teacher
    unlab = [] if has_fsdd else ["--unlabelled", "data/valid"]
    proc = subprocess.run(["./run_noisy_student.sh", *unlab, "--debug", "true", "--python", sys.executable], cwd=recipe,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = lambda p: (recipe / p).read_text().splitlines()  # noqa: E731
    assert 0 < len(lines("data/train_pl1_unlab/text")) and len(lines("data/train_pl1/text")) == len(lines("data/train/text")) + len(
        lines("data/train_pl1_unlab/text"))
    noisy = yaml.safe_load((recipe / "exp/asr_kd_student_noisy1/config.yaml").read_text())
    assert noisy["specaug"] == "specaug" and noisy["model_conf"]["kd_weight"] == 0
    assert any("dump/raw/train_pl1/text" in p[0] for p in noisy["train_data_path_and_name_and_type"])
    rows = [[c.strip() for c in r.split("|")[1:-1]] for r in (recipe / "exp/RESULTS.md").read_text().splitlines()[2:]]
    assert "asr_kd_student_noisy1" in {r[0] for r in rows}
    assert (recipe / "exp/asr_kd_student_noisy1/packed.zip").stat().st_size > 0  # the next round's teacher
    if not has_fsdd:  # everything else was checked; say what was not
        pytest.skip(f"{ROOT.parent / 'shared/data/fsdd'} missing: the recipe's real-speech (FSDD) test set was not checked")


def _killed_at_a_random_point_and_rerun_equals(whole, tmp, env):
    """SIGKILL to the whole recipe (bash and its python children) inside a random stage 1-7; running the same command
    again finishes it, and its students and decodings equal the uninterrupted run's (``whole``)."""
    recipe = tmp / "egs2" / "kd_synth" / "asr1"
    shutil.copytree(ROOT / "egs2" / "kd_synth" / "asr1", recipe, ignore=shutil.ignore_patterns("data", "dump", "exp"))
    rng = random.Random(os.getpid())
    stage, delay = rng.randint(1, 7), rng.uniform(0, 2)
    cmd = ["./run.sh", "--debug", "true", "--python", sys.executable]
    with open(tmp / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=recipe, env=env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.time() + 900
        while proc.poll() is None and time.time() < deadline and f"Stage {stage}:" not in (tmp / "killed.log").read_text():
            time.sleep(0.05)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the recipe ended before the kill in stage {stage} (+{delay:.1f} s)"
    rerun = subprocess.run(cmd, cwd=recipe, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, f"killed in stage {stage} (+{delay:.1f} s); the re-run failed:\n{rerun.stderr[-3000:]}"
    for student in ("asr_kd_student", "asr_kd_student_scratch"):
        a = torch.load(whole / "exp" / student / "valid.loss.ave.pth", map_location="cpu")
        b = torch.load(recipe / "exp" / student / "valid.loss.ave.pth", map_location="cpu")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{student} differs (killed in stage {stage})"
    texts = sorted(p.relative_to(whole) for p in (whole / "exp").glob("*/decode_*/*/1best_recog/text"))
    assert texts and texts == sorted(p.relative_to(recipe) for p in (recipe / "exp").glob("*/decode_*/*/1best_recog/text"))
    assert all((whole / t).read_text() == (recipe / t).read_text() for t in texts), f"decodings differ (killed in stage {stage})"
