"""Writes that fail: an output folder that cannot exist (a path under a file) and a full disk (ENOSPC while writing)
end in one line naming the path, and nothing already written is lost or replaced by a half-written file."""
import errno
import subprocess
import sys
from pathlib import Path

import pytest

from kd_core.atomic import atomic_write, atomic_write_text
from kd_core.errors import KDConfigError

REPO = Path(__file__).resolve().parents[2]


def test_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "results.json", '{"old": 1}')

    def write_then_disk_full(tmp):
        Path(tmp).write_text('{"new": ')
        raise OSError(errno.ENOSPC, "No space left on device", tmp)

    with pytest.raises(KDConfigError) as err:
        atomic_write(target, write_then_disk_full)
    msg = str(err.value)
    assert "\n" not in msg and "No space left on device" in msg and "writable folder with free space" in msg
    assert target.read_text() == '{"old": 1}' and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_output_folder_under_a_file_is_one_line(tmp_path, tiny_teachers):
    (tmp_path / "wavs").mkdir()
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(KDConfigError, match="cannot write the x.txt"):
        atomic_write_text(blocker / "sub" / "x.txt", "y")
    scp = tmp_path / "wav.scp"
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "wavs" / "a.wav", np.zeros(8000, dtype=np.float32), 16000)
    scp.write_text(f"a {tmp_path / 'wavs' / 'a.wav'}\n")
    proc = subprocess.run([sys.executable, "-m", "kd_core.cache", "build", "--teacher_type", "fairseq", "--teacher_path",
                           str(tiny_teachers["fairseq_hubert"]), "--layers", "1", "--out", str(blocker / "cache"),
                           "--wav_scp", str(scp), "--no_progress"], capture_output=True, text=True, cwd=REPO)
    last = proc.stderr.strip().splitlines()[-1]  # (the lines before it: the teacher loader's log)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith("error: ") and "not_a_folder" in last and "cannot write" in last, last
    assert blocker.read_text() == "x"
