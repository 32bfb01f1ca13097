"""A real fault: ``fairseq-hydra-train`` distilling a teacher is killed with SIGKILL at a random point after its first
mid-epoch checkpoint; re-running the same command resumes from ``checkpoint_last.pt`` (fairseq restores the data
iterator's position) and the final student is bitwise the uninterrupted run's."""
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fairseq_helpers import ROOT, USER_DIR, hydra_train

pytestmark = pytest.mark.slow


def test_kd_training_killed_with_sigkill_resumes_to_the_uninterrupted_student(fairseq_data, tiny_teachers, tmp_path):
    from kd_core.teachers.fairseq_teacher import read_fairseq_checkpoint

    args = [f"task.data={fairseq_data['letters']}", f"model.teacher_path={tiny_teachers['fairseq_hubert']}",
            "optimization.max_update=60", "optimization.max_epoch=0", "dataset.disable_validation=true",
            "dataset.max_tokens=40000", "checkpoint.save_interval_updates=2", "checkpoint.keep_interval_updates=1"]
    hydra_train(*args, save_dir=tmp_path / "whole", cwd=tmp_path)
    killed = tmp_path / "killed"
    exe = Path(sys.executable).parent / "fairseq-hydra-train"
    cmd = [str(exe), "--config-dir", str(ROOT / "conf" / "fairseq"), "--config-name", "kd_streaming", f"common.user_dir={USER_DIR}",
           f"checkpoint.save_dir={killed}", "+size=debug", *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not (killed / "checkpoint_last.pt").exists():
        time.sleep(0.05)
    time.sleep(random.Random(os.getpid()).uniform(0, 1.0))  # between updates, inside one, or inside a checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed: give it more updates"
    state = read_fairseq_checkpoint(str(killed / "checkpoint_last.pt"))  # what survived is a whole checkpoint
    done = state["optimizer_history"][-1]["num_updates"]
    assert 2 <= done < 60
    rerun = hydra_train(*args, save_dir=killed, cwd=tmp_path)
    assert re.search(rf"Loaded checkpoint {re.escape(str(killed / 'checkpoint_last.pt'))} \(epoch \d+ @ {done} updates\)", rerun.stdout)
    a = read_fairseq_checkpoint(str(tmp_path / "whole" / "checkpoint_last.pt"))
    b = read_fairseq_checkpoint(str(killed / "checkpoint_last.pt"))
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"] == 60
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "resumed student differs from the uninterrupted one"
