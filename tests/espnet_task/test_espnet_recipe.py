"""The debug-size egs2 recipe runs end to end (data -> tokenizer -> stats -> teacher -> KD -> decode -> score)."""
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


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
    table = {(r[0], r[1], r[2]): float(r[6]) for r in rows}  # model, decoding, test set -> WER
    has_fsdd = (ROOT.parent / "shared/data/fsdd/recordings").is_dir()
    tests = ["test_synth"] + (["test_fsdd"] if has_fsdd else [])
    assert ("asr_teacher", "offline", "test_fsdd") in table if has_fsdd else not any(k[2] == "test_fsdd" for k in table)
    for t in tests:
        assert ("asr_teacher", "offline", t) in table
        # chunk-by-chunk streaming decoding equals the offline (masked) decoding of the same student
        assert table[("asr_kd_student", "offline", t)] == table[("asr_kd_student", "streaming", t)]
    assert (recipe / "exp/asr_teacher/teacher.zip").stat().st_size > 0
    assert (recipe / "exp/asr_kd_student/export/config.yaml").exists()
    # rerunning a finished stage range resumes: training stages find their checkpoints and do not retrain
    before = (recipe / "exp/asr_kd_student/checkpoint.pth").stat().st_mtime_ns
    subprocess.run(["./run.sh", "--debug", "true", "--python", sys.executable, "--stage", "6", "--stop_stage", "6"],
                   cwd=recipe, env=env, capture_output=True, text=True, check=True)
    assert (recipe / "exp/asr_kd_student/checkpoint.pth").stat().st_mtime_ns == before
    # every method on the same teacher and budget, into one table with each model's latency
    proc = subprocess.run(["./run_methods.sh", "--debug", "true", "--python", sys.executable], cwd=recipe, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [[c.strip() for c in r.split("|")[1:-1]] for r in (recipe / "exp/RESULTS.md").read_text().splitlines()[2:]]
    models = {r[0] for r in rows}
    assert {f"asr_kd_student{t}" for t in ("", "_layerwise", "_scratch", "_aux_apc", "_lfmmi", "_stage2")} <= models
    assert all(r[4] == "525" for r in rows if r[0].startswith("asr_kd_student"))  # 480 ms chunk + 45 ms front-end
    assert (recipe / "exp/asr_kd_student_stage1/stage1.zip").exists()
    if not has_fsdd:  # everything else was checked; say what was not
        pytest.skip(f"{ROOT.parent / 'shared/data/fsdd'} missing: the recipe's real-speech (FSDD) test set was not checked")
