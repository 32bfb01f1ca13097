"""PEP 517 / PEP 660 build backend: setuptools' own (``setuptools.build_meta``), plus the start-up hook.

Every wheel it builds, regular or editable, gets ``espnet_kd_aliases.pth`` at its root (listed in the
wheel's ``RECORD``, so ``pip uninstall`` removes it). The hook maps ``python -m espnet2.bin.asr_kd_train``
and ``asr_kd_inference`` to ``espnet_kd.bin`` (see ``espnet_kd/_aliases.py``), which ESPnet's
``asr.sh --asr_task asr_kd`` calls. Only the PEP 517 hook interface and the wheel format are used: no
setuptools command class is overridden, so the legacy ``setup.py develop`` path is never needed.
"""
from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (the hooks we do not change)
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

#: relative to the source tree, the working directory of every PEP 517 hook
PTH = Path("espnet_kd") / "espnet_kd_aliases.pth"


def add_to_wheel(wheel_path: str, arcname: str, data: bytes) -> None:
    """Add ``data`` as ``arcname`` to a built wheel and to its ``RECORD`` (rewritten atomically)."""
    tmp = f"{wheel_path}.tmp"
    with zipfile.ZipFile(wheel_path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        record = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        for item in src.infolist():
            if item.filename != record:
                dst.writestr(item, src.read(item.filename))
        dst.writestr(arcname, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines = src.read(record).decode("utf-8").rstrip("\n").split("\n")
        dst.writestr(record, "\n".join(lines + [f"{arcname},sha256={digest},{len(data)}"]) + "\n")
    os.replace(tmp, wheel_path)


def _with_pth(wheel_directory: str, name: str) -> str:
    add_to_wheel(os.path.join(wheel_directory, name), PTH.name, PTH.read_bytes())
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _with_pth(wheel_directory, _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory))


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _with_pth(wheel_directory, _setuptools.build_editable(wheel_directory, config_settings, metadata_directory))
