"""Helpers for the fairseq plugin tests: run the real ``fairseq-hydra-train`` / our CLIs in fresh processes."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
USER_DIR = ROOT / "fairseq_kd"


def hydra_train(*overrides, save_dir, cwd, check=True, size="debug"):
    """``fairseq-hydra-train --config-dir conf/fairseq --config-name kd_streaming +size=<size> ...`` in a
    fresh process; returns the CompletedProcess (stdout: fairseq's log, stderr: warnings and errors)."""
    exe = Path(sys.executable).parent / "fairseq-hydra-train"
    cmd = [str(exe), "--config-dir", str(ROOT / "conf" / "fairseq"), "--config-name", "kd_streaming",
           f"common.user_dir={USER_DIR}", f"checkpoint.save_dir={save_dir}", *([f"+size={size}"] if size else []),
           *map(str, overrides)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"fairseq-hydra-train failed ({proc.returncode}):\n{proc.stderr[-3000:]}\n{proc.stdout[-2000:]}")
    return proc


def run_module(module, *args, cwd, check=True):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc
