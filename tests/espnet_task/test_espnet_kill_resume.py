"""A real fault: ``espnet2.bin.asr_kd_train`` distilling a teacher is killed with SIGKILL at a random point after its first
epoch checkpoint; re-running the same command with ``--resume true`` continues from the last whole epoch and the final
student is bitwise the uninterrupted run's (ESPnet seeds every epoch from ``--seed`` + epoch)."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import run_espnet
from test_espnet_kd_train import CHUNKED

pytestmark = pytest.mark.slow


def test_kd_training_killed_with_sigkill_resumes_to_the_uninterrupted_student(espnet_data, tiny_teachers, tmp_path):
    args = [*espnet_data["train"], *CHUNKED, "--teacher_type", "fairseq", "--teacher_path", tiny_teachers["fairseq_hubert"],
            "--kd_loss_conf", "layer_map='1:1,3:2'", "--max_epoch", "3", "--resume", "true", "--num_att_plot", "0"]
    run_espnet("espnet2.bin.asr_kd_train", *args, "--output_dir", tmp_path / "whole", cwd=espnet_data["root"])
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "espnet2.bin.asr_kd_train", *map(str, args), "--output_dir", str(killed)],
                            cwd=espnet_data["root"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not (killed / "checkpoint.pth").exists():
        time.sleep(0.05)
    time.sleep(random.Random(os.getpid()).uniform(0, 1.0))  # inside a later epoch, its validation or a checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed: give it more epochs"
    done = torch.load(killed / "checkpoint.pth", map_location="cpu", weights_only=False)["reporter"]["epoch"]
    assert 1 <= done < 3
    rerun = run_espnet("espnet2.bin.asr_kd_train", *args, "--output_dir", killed, cwd=espnet_data["root"])
    assert f"{done + 1}/3epoch started" in rerun.stderr and "1/3epoch started" not in rerun.stderr
    a = torch.load(tmp_path / "whole" / "checkpoint.pth", map_location="cpu", weights_only=False)["model"]
    b = torch.load(killed / "checkpoint.pth", map_location="cpu", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed student differs from the uninterrupted one"
    # a kill while ESPnet writes checkpoint.pth (in place) leaves it torn: the re-run refuses it with one line, untouched
    torn = tmp_path / "torn"
    torn.mkdir()
    data = (killed / "checkpoint.pth").read_bytes()
    (torn / "checkpoint.pth").write_bytes(data[: len(data) // 2])
    proc = run_espnet("espnet2.bin.asr_kd_train", *args, "--output_dir", torn, cwd=espnet_data["root"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "checkpoint.pth is incomplete" in proc.stderr.strip().splitlines()[-1]
    assert (torn / "checkpoint.pth").read_bytes() == data[: len(data) // 2]
