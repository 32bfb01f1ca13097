"""Atomic writes: a failed write keeps the old file and leaves no temporary; permissions follow the umask."""
import os

import pytest

from kd_core.atomic import atomic_write, atomic_write_text


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_text(path, "old")

    def half_then_crash(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["state.json"]


def test_permissions_match_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode == plain.stat().st_mode
