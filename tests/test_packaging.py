"""Packaging through pyproject.toml (PEP 517 / PEP 660): every wheel, regular and editable, carries the
start-up hook that makes ``python -m espnet2.bin.asr_kd_{train,inference}`` work, listed in its RECORD."""
import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PTH = ROOT / "espnet_kd" / "espnet_kd_aliases.pth"


def _build(hook: str, out: Path) -> Path:
    """Call the backend's hook as a PEP 517 front-end does: backend-path on sys.path, cwd = source tree."""
    import tomllib

    system = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    code = ("import json, sys; sys.path[:0] = json.loads(sys.argv[1]); import importlib; "
            f"print(getattr(importlib.import_module(sys.argv[2]), {hook!r})(sys.argv[3]))")
    paths = [str(ROOT / p) for p in system["backend-path"]]
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(paths), system["build-backend"], str(out)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("hook", ["build_wheel", "build_editable"])
def test_wheels_carry_the_alias_hook(hook, tmp_path):
    wheel = _build(hook, tmp_path)
    with zipfile.ZipFile(wheel) as z:
        assert z.read(PTH.name) == PTH.read_bytes()  # at the wheel root = site-packages
        record = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))).decode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(PTH.read_bytes()).digest()).rstrip(b"=").decode()
        assert f"{PTH.name},sha256={digest},{PTH.stat().st_size}" in record.splitlines()  # uninstall removes it
        names = z.namelist()
    if hook == "build_wheel":
        assert "espnet_kd/bin/asr_kd_train.py" in names and "kd_core/runner.py" in names
    else:  # PEP 660: the package stays in the source tree
        assert not any(n.startswith("kd_core/") for n in names)


def test_setup_py_has_no_command_overrides():
    """The hook no longer depends on setuptools command classes (the legacy ``setup.py develop`` path)."""
    assert "cmdclass" not in (ROOT / "setup.py").read_text()
