"""Audio loading errors, Kaldi dir reading, tokenizer and greedy CTC."""
import numpy as np
import pytest
import soundfile as sf
import torch

from kd_core.data import CharTokenizer, greedy_ctc, load_audio, read_kaldi_dir
from kd_core.errors import KDConfigError


def test_audio_errors(tmp_path):
    sf.write(tmp_path / "ok.wav", np.zeros(1600, dtype=np.float32), 16000)
    sf.write(tmp_path / "r8k.wav", np.zeros(800, dtype=np.float32), 8000)
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....garbage")
    sf.write(tmp_path / "stereo.wav", np.zeros((1600, 2), dtype=np.float32), 16000)
    assert load_audio(str(tmp_path / "ok.wav")).shape == (1600,)
    for name, msg in [("r8k.wav", "sample rate 8000 Hz, expected 16000 Hz; resample"), ("empty.wav", "empty audio"),
                      ("bad.wav", "cannot read audio"), ("nope.wav", "audio file not found"),
                      ("stereo.wav", "2 channels, expected mono")]:
        with pytest.raises(KDConfigError, match=msg) as e:
            load_audio(str(tmp_path / name))
        assert name in str(e.value) and "\n" not in str(e.value)


def test_kaldi_dir(tmp_path):
    (tmp_path / "wav.scp").write_text("b /x/b.wav\na /x/a.wav\n")
    (tmp_path / "text").write_text("a HELLO WORLD\nb BYE\n")
    utts = read_kaldi_dir(str(tmp_path))
    assert [(u.uid, u.path, u.text) for u in utts] == [("a", "/x/a.wav", "HELLO WORLD"), ("b", "/x/b.wav", "BYE")]
    (tmp_path / "wav.scp").write_text("lonely\n")
    with pytest.raises(KDConfigError, match="wav.scp:1: expected 'utt_id /path/to.wav'"):
        read_kaldi_dir(str(tmp_path))


def test_tokenizer_and_greedy_ctc():
    tok = CharTokenizer.from_texts(["AB BA"])
    assert tok.symbols == ["<blank>", "A", "B", "|"]
    ids = tok.encode("ab ba")
    assert ids == [1, 2, 3, 2, 1] and tok.decode(ids) == "AB BA"
    # frames: A A blank A B | | B -> "AAB BB"? repeats merge, blank separates
    path = torch.tensor([1, 1, 0, 1, 2, 3, 3, 2, 0])
    logits = torch.nn.functional.one_hot(path, 4).float()[None]
    assert greedy_ctc(logits, torch.tensor([8])) == [[1, 1, 2, 3, 2]]
    assert tok.decode(greedy_ctc(logits, torch.tensor([8]))[0]) == "AAB B"
