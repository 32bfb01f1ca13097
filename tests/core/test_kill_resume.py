"""Real faults: a teacher-target cache build killed with SIGKILL at a random point (not an exception raised from a
callback) is incomplete, is never served as complete, and re-running the same command finishes it; the result is
bitwise the cache of an uninterrupted build."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from kd_core.cache import TeacherTargetCache, read_wav_list, teacher_fingerprint
from kd_core.data import load_audio, pad_batch

REPO = Path(__file__).resolve().parents[2]


def _corpus(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True)
    lines = []
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * np.arange(24000) / 16000) + 0.05 * rng.standard_normal(24000)
        sf.write(folder / f"u{i:03d}.wav", x.astype(np.float32), 16000, subtype="PCM_16")
        lines.append(f"u{i:03d} {folder / f'u{i:03d}.wav'}\n")
    (folder / "wav.scp").write_text("".join(lines))
    return folder / "wav.scp"


def _build(ckpt, scp, out):
    return [sys.executable, "-m", "kd_core.cache", "build", "--teacher_type", "fairseq", "--teacher_path", ckpt, "--layers",
            "1,3", "--dtype", "float16", "--out", str(out), "--wav_scp", str(scp), "--shard_size", "1", "--no_progress"]


def test_cache_build_killed_with_sigkill_resumes_to_the_uninterrupted_result(tiny_teachers, tmp_path):
    ckpt = str(tiny_teachers["fairseq_hubert"])
    scp = _corpus(tmp_path / "wavs", 60)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    fp = teacher_fingerprint("fairseq", ckpt)
    cache = TeacherTargetCache(tmp_path / "killed", fp, [1, 3], "float16", False)
    proc = subprocess.Popen(_build(ckpt, scp, tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (cache.path.is_dir() and cache.shard_names()):
        time.sleep(0.02)
    time.sleep(random.Random(os.getpid()).uniform(0, 0.2))  # somewhere inside the build, between or inside shards
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed: give it more work"
    status = cache.status()
    assert 1 <= status["cached"] < 60 and not status["complete"]

    rerun = subprocess.run(_build(ckpt, scp, tmp_path / "killed"), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    whole = subprocess.run(_build(ckpt, scp, tmp_path / "whole"), env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-2000:]
    resumed, reference = (TeacherTargetCache(tmp_path / d, fp, [1, 3], "float16", False) for d in ("killed", "whole"))
    assert resumed.complete and reference.complete and resumed.status()["temporary_dirs"] == 0
    wav, lens = pad_batch([load_audio(p) for _, p in read_wav_list(wav_scp=str(scp))])
    a, b = resumed.lookup(wav, lens), reference.lookup(wav, lens)
    assert torch.equal(a.lengths, b.lengths)
    assert [x is None for x in a.hidden] == [y is None for y in b.hidden] == [True, False, True, False]  # layers 1, 3
    assert all(torch.equal(x, y) for x, y in zip(a.hidden, b.hidden) if x is not None)
