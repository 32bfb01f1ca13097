"""A real fault in the core training loop (what the benchmark's student stages run): killed with SIGKILL at a random
point after its first checkpoint, the same command resumes and the final student is bitwise the uninterrupted one."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys, torch
from kd_core.runner import train_loop
from kd_core.students import student_tiny
torch.manual_seed(0)
model = student_tiny(num_layers=2, chunk_size=3, vocab_size=6)
def batches():
    g = torch.Generator().manual_seed(1)
    while True:
        yield torch.randn(2, 6000, generator=g)
def step(wav):
    out = model(wav, torch.tensor([6000, 6000]))
    return out.logits.pow(2).mean(), {}
train_loop(model, step, batches(), lr=1e-3, warmup=2, ckpt=sys.argv[1], steps=int(sys.argv[2]), ckpt_every_s=0.0)
torch.save(model.state_dict(), sys.argv[1] + ".final")
"""


def test_train_loop_killed_with_sigkill_resumes_to_the_uninterrupted_student(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = lambda ckpt, **kw: [sys.executable, "-c", SCRIPT, str(ckpt), "150"]  # noqa: E731
    subprocess.run(run(tmp_path / "whole.pt"), env=env, check=True, capture_output=True)
    killed = tmp_path / "killed.pt"
    proc = subprocess.Popen(run(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not killed.exists():
        time.sleep(0.01)
    time.sleep(random.Random(os.getpid()).uniform(0, 0.5))  # inside a step or inside a checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed: give it more steps"
    done = torch.load(killed, weights_only=False)["state"]["step"]  # the checkpoint on disk is whole
    assert 1 <= done < 150
    subprocess.run(run(killed), env=env, check=True, capture_output=True)
    a, b = torch.load(tmp_path / "whole.pt.final"), torch.load(str(killed) + ".final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed student differs from the uninterrupted one"
