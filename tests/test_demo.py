"""End to end: tools/demo.py --quick (corpus -> teacher -> streaming students -> report), resumable."""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_quick_end_to_end_and_resume(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, str(ROOT / "tools/demo.py"), "--quick", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [r.split("|")[1].strip().split()[0] for r in rows] == ["teacher", "student_kd", "student_scratch"]
    for r in rows:
        cells = [c.strip() for c in r.split("|")[2:-1]]
        params, latency, wer = float(cells[0]), float(cells[2]), float(cells[3])
        assert params > 0 and 0 <= wer <= 100 * 5
    teacher_params = float(rows[0].split("|")[2])
    assert float(rows[1].split("|")[2]) < teacher_params / 4  # student is much smaller
    assert "| inf |" in rows[0] and float(rows[1].split("|")[4]) == 525  # 480 ms chunk + 45 ms front-end
    assert (out / "training_curves.png").stat().st_size > 10_000
    assert (out / "data/kaldi/test/wav.scp").exists() and (out / "data/fairseq/train.tsv").exists()
    # a second run reuses every stage (no retraining: checkpoints untouched)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    assert set(stamps) == {"teacher.pt", "student_kd.pt", "student_scratch.pt"}
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")} == stamps
    assert not list(out.glob("*.tmp"))
