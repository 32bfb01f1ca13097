"""The bad-input matrix of the core (teachers, audio, loss weights): each row ends in one line naming what and
where, and touches no file (the adapters' rows run through the real trainers in tests/espnet_task and tests/fairseq)."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kd_core.data import load_audio
from kd_core.distiller import Distiller
from kd_core.errors import KDConfigError
from kd_core.students import student_tiny
from kd_core.teachers import load_teacher


def _digest(folder: Path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def files(tiny_teachers, tmp_path):
    data = Path(tiny_teachers["fairseq_hubert"]).read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "state_dict.pt")
    sf.write(tmp_path / "stereo.wav", np.zeros((1600, 2), dtype=np.float32), 16000)
    sf.write(tmp_path / "8k.wav", np.zeros(800, dtype=np.float32), 8000)
    return tmp_path


ROWS = [  # (what, call(files, tiny_teachers), words the one line must contain)
    ("missing teacher", lambda f, t: load_teacher("fairseq", str(f / "nope.pt")), ["nope.pt", "file not found"]),
    ("truncated teacher", lambda f, t: load_teacher("fairseq", str(f / "truncated.pt")), ["truncated.pt", "not a readable"]),
    ("another family (ESPnet zip as fairseq)", lambda f, t: load_teacher("fairseq", str(t["espnet"])), ["espnet_asr_tiny.zip"]),
    ("a bare state dict", lambda f, t: load_teacher("fairseq", str(f / "state_dict.pt")), ["state_dict.pt", "not a readable"]),
    ("unknown teacher type", lambda f, t: load_teacher("kaldi", "x"), ["teacher_type='kaldi'", "choose one of"]),
    ("stereo audio", lambda f, t: load_audio(str(f / "stereo.wav")), ["stereo.wav", "expected mono"]),
    ("wrong sample rate", lambda f, t: load_audio(str(f / "8k.wav")), ["8k.wav", "8000 Hz"]),
    ("negative weight", lambda f, t: Distiller(None, student_tiny(), kd_weight=-1.0), ["kd_weight=-1.0", ">= 0"]),
    ("non-finite weight", lambda f, t: Distiller(None, student_tiny(), ctc_weight=float("nan")), ["ctc_weight=nan"]),
]


@pytest.mark.parametrize("what,call,words", ROWS, ids=[r[0] for r in ROWS])
def test_one_line_and_nothing_touched(files, tiny_teachers, what, call, words):
    before = _digest(files), _digest(Path(tiny_teachers["fairseq_hubert"]).parent)
    with pytest.raises(KDConfigError) as err:
        call(files, tiny_teachers)
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    assert (_digest(files), _digest(Path(tiny_teachers["fairseq_hubert"]).parent)) == before
