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


def _apc_short_batch(f, t):
    from kd_core.losses.aux_apc import AuxAPCKDLoss

    student = student_tiny(chunk_size=4)
    loss = AuxAPCKDLoss(student.encoder, teacher_dim=8, teacher_layers=2, layer_map="2:2", apc_shift=3, use_aux=False,
                        teacher_shift_ms=40.0, student_shift_ms=40.0)
    teacher = [torch.zeros(1, 3, 8)] * 3
    return loss(teacher, torch.tensor([3]), [torch.zeros(1, 3, 64)] * 4, torch.tensor([3]))


def _lfmmi_other_token_list(f, t):
    from kd_core.losses.lfmmi import LFMMIPredictionLoss
    from kd_core.losses.lfmmi_graph import cached_den_graph

    graph = cached_den_graph([[1, 2, 3]], vocab_size=5)  # built for a 5-unit token list
    logits = torch.zeros(1, 6, 7)
    return LFMMIPredictionLoss(graph, teacher_shift_ms=40.0, student_shift_ms=40.0)(logits, torch.tensor([6]), logits, torch.tensor([6]))


def _tokenize_unknown(f, t):
    from kd_core.data import CharTokenizer

    return CharTokenizer.from_texts(["AB BA"]).encode("ABC A")


MORE_ROWS = [
    ("transcript characters outside the token list", _tokenize_unknown, ["'ABC A'", "'C'", "not in the token list"]),
    ("APC shift >= sequence length", _apc_short_batch, ["apc_shift=3", "3 student frames"]),
    ("LF-MMI graph built for another token list", _lfmmi_other_token_list, ["5 output units", "student has 7"]),
]


@pytest.mark.parametrize("what,call,words", MORE_ROWS, ids=[r[0] for r in MORE_ROWS])
def test_one_line_for_data_and_loss_config(files, tiny_teachers, what, call, words):
    test_one_line_and_nothing_touched(files, tiny_teachers, what, call, words)
