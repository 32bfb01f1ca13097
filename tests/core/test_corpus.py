"""Synthetic corpus (espeak-ng + sox) and FSDD preparation: determinism, splits, formats, errors."""
import hashlib
import shutil
import sys
from pathlib import Path

import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from make_corpus import DIGITS, make_synthetic_corpus, prepare_fsdd  # noqa: E402
from text_sources import normalise, wordnet_sentences  # noqa: E402

from kd_core.errors import KDConfigError  # noqa: E402

FSDD = Path(__file__).resolve().parents[3] / "shared/data/fsdd"


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "corpus.json" and p.suffix != ".scp" and p.suffix != ".tsv"}


def _read(path):
    return dict(line.rstrip("\n").split(" ", 1) for line in open(path, encoding="utf-8"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "c"
    return out, make_synthetic_corpus(out, seed=3, num_train=8, num_valid=3, num_test=4)


def test_deterministic_by_seed(corpus, tmp_path):
    out, _ = corpus
    again = tmp_path / "again"
    make_synthetic_corpus(again, seed=3, num_train=8, num_valid=3, num_test=4)
    assert _digest(out) == _digest(again) and len(_digest(out)) > 15
    other = tmp_path / "other"
    make_synthetic_corpus(other, seed=4, num_train=8, num_valid=3, num_test=4)
    assert (out / "kaldi/train/text").read_text() != (other / "kaldi/train/text").read_text()


def test_test_voices_unseen_in_training(corpus):
    out, summary = corpus
    train = set(_read(out / "kaldi/train/utt2spk").values()) | set(_read(out / "kaldi/valid/utt2spk").values())
    test = set(_read(out / "kaldi/test/utt2spk").values())
    assert test and train and not train & test
    assert set(summary["splits"]["test"]["voices"]) == test


def test_kaldi_dir_is_consistent(corpus):
    out, _ = corpus
    for split, n in (("train", 8), ("valid", 3), ("test", 4)):
        d = out / "kaldi" / split
        scp, text, u2s = _read(d / "wav.scp"), _read(d / "text"), _read(d / "utt2spk")
        assert len(scp) == n and scp.keys() == text.keys() == u2s.keys()
        lines = (d / "wav.scp").read_text().splitlines()
        assert lines == sorted(lines)
        s2u = {s: us.split() for s, us in _read(d / "spk2utt").items()}
        assert {u for us in s2u.values() for u in us} == set(u2s) and all(u2s[u] == s for s, us in s2u.items() for u in us)
        for uid, path in scp.items():
            assert uid.startswith(u2s[uid] + "-")  # Kaldi: utterance ids are prefixed by the speaker id
            info = sf.info(path)
            assert info.samplerate == 16000 and info.channels == 1 and 0.3 < info.duration < 10
            assert text[uid] and text[uid] == text[uid].upper()


def test_fairseq_manifest_matches(corpus):
    out, _ = corpus
    f = out / "fairseq"
    lines = (f / "train.tsv").read_text().splitlines()
    root = Path(lines[0])
    for line in lines[1:]:
        rel, n = line.split("\t")
        assert sf.info(str(root / rel)).frames == int(n)
    wrd = (f / "train.wrd").read_text().splitlines()
    ltr = (f / "train.ltr").read_text().splitlines()
    assert len(wrd) == len(ltr) == len(lines) - 1
    for w, l in zip(wrd, ltr):
        assert l.endswith(" |") and l.replace(" ", "").replace("|", " ").strip() == w
    symbols = [line.split()[0] for line in (f / "dict.ltr.txt").read_text().splitlines()]
    assert "|" in symbols and set("".join(wrd).replace(" ", "")) <= set(symbols)


def test_rerun_resumes_and_rebuilds_lists(corpus, tmp_path):
    out, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "kaldi/train/wav.scp").unlink()
    victim = next((copy / "wav/test").glob("*.wav"))
    victim.unlink()
    make_synthetic_corpus(copy, seed=3, num_train=8, num_valid=3, num_test=4)
    assert _digest(copy) == _digest(out)


@pytest.mark.skipif(not FSDD.is_dir(), reason="shared FSDD not present")
def test_fsdd(tmp_path):
    summary = prepare_fsdd(FSDD, tmp_path, max_per_split=5)
    assert summary["splits"]["test"]["count"] == 5
    for split in ("train", "test"):
        text, scp = _read(tmp_path / "kaldi" / split / "text"), _read(tmp_path / "kaldi" / split / "wav.scp")
        for uid, words in text.items():
            digit, idx = uid.split("-")[1].split("_")
            assert words == DIGITS[int(digit)]
            assert (int(idx) < 5) == (split == "test")
            assert sf.info(scp[uid]).samplerate == 16000


def test_augmentations_change_audio_deterministically(corpus, tmp_path):
    out, _ = corpus
    aug = tmp_path / "aug"
    make_synthetic_corpus(aug, seed=3, num_train=8, num_valid=3, num_test=4, noise_snr_db=20, reverb=50, speed_perturb=True)
    again = tmp_path / "aug2"
    make_synthetic_corpus(again, seed=3, num_train=8, num_valid=3, num_test=4, noise_snr_db=20, reverb=50, speed_perturb=True)
    assert _digest(aug) == _digest(again)
    assert (aug / "kaldi/train/text").read_text() == (out / "kaldi/train/text").read_text()  # same texts, other audio
    clean, noisy = _digest(out), _digest(aug)
    assert all(clean[k] != noisy[k] for k in clean if k.startswith("wav/"))


def test_wordnet_sentences():
    sents = wordnet_sentences()
    assert len(sents) > 10_000 and all(s == normalise(s) and 3 <= len(s.split()) <= 12 for s in sents[:500])


@pytest.mark.parametrize("kw,msg", [(dict(num_train=0), "num_train=0"), (dict(text_source="books"), "text_source='books'"),
                                    (dict(reverb=150), "reverb=150")])
def test_bad_options(tmp_path, kw, msg):
    with pytest.raises(KDConfigError, match=msg):
        make_synthetic_corpus(tmp_path, **kw)


def test_missing_fsdd_and_tools(tmp_path, monkeypatch):
    with pytest.raises(KDConfigError, match="fsdd_dir=.*no recordings"):
        prepare_fsdd(tmp_path / "nope", tmp_path / "out")
    monkeypatch.setenv("PATH", str(tmp_path))  # an environment without espeak-ng
    with pytest.raises(KDConfigError, match="espeak-ng: not found"):
        make_synthetic_corpus(tmp_path / "x", num_train=1, num_valid=1, num_test=1)
