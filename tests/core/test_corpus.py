"""Synthetic corpus (espeak-ng + sox) and FSDD preparation: determinism, splits, formats, errors."""
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from kd_core.errors import KDConfigError
from tools import make_corpus
from tools.make_corpus import DIGITS, make_synthetic_corpus, prepare_fsdd
from tools.text_sources import normalise, wordnet_sentences

TOOLS = Path(__file__).resolve().parents[2] / "tools"

FSDD = Path(__file__).resolve().parents[3] / "shared/data/fsdd"


def _digest(root: Path) -> dict:
    """md5 of every output file; absolute paths (wav.scp, *.tsv) are made relative to ``root`` first."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "corpus.json":  # corpus.json records the absolute output dir
            data = p.read_bytes()
            if p.name == "wav.scp" or p.suffix == ".tsv":
                data = data.replace(str(root.resolve()).encode(), b"ROOT")
            out[str(p.relative_to(root))] = hashlib.md5(data).hexdigest()
    return out


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
    assert _digest(out) == _digest(again) and sum(k.endswith(".wav") for k in _digest(out)) == 15
    assert sum(k.endswith((".scp", ".tsv")) for k in _digest(out)) == 6
    other = tmp_path / "other"
    make_synthetic_corpus(other, seed=4, num_train=8, num_valid=3, num_test=4)
    assert (out / "kaldi/train/text").read_text() != (other / "kaldi/train/text").read_text()


def test_test_voices_unseen_in_training(corpus):
    out, summary = corpus
    train = set(_read(out / "kaldi/train/utt2spk").values()) | set(_read(out / "kaldi/valid/utt2spk").values())
    test = set(_read(out / "kaldi/test/utt2spk").values())
    assert test and train and not train & test
    assert set(summary["splits"]["test"]["voices"]) == test
    pools = {split: {make_corpus.spk_id(v) for v in make_corpus.speakers(split)} for split in ("train", "valid", "test")}
    assert not (pools["train"] | pools["valid"]) & pools["test"]  # the whole pools, not just the voices drawn
    meta = json.loads((out / "corpus.json").read_text())
    assert meta["seed"] == 3 and meta["splits"]["test"]["voices"] == sorted(test)
    assert all(v in (out / "README.txt").read_text() for v in test)


def test_kaldi_dir_is_consistent(corpus):
    out, _ = corpus
    for split, n in (("train", 8), ("valid", 3), ("test", 4)):
        d = out / "kaldi" / split
        scp, text, u2s = _read(d / "wav.scp"), _read(d / "text"), _read(d / "utt2spk")
        assert len(scp) == n and scp.keys() == text.keys() == u2s.keys()
        for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
            lines = (d / name).read_text().splitlines()
            assert lines and lines == sorted(lines), name
        assert list(u2s.values()) == sorted(u2s.values())  # sorted by utterance is sorted by speaker too
        s2u = {s: us.split() for s, us in _read(d / "spk2utt").items()}
        assert {u for us in s2u.values() for u in us} == set(u2s) and all(u2s[u] == s for s, us in s2u.items() for u in us)
        for uid, path in scp.items():
            assert uid.startswith(u2s[uid] + "-")  # Kaldi: utterance ids are prefixed by the speaker id
            assert Path(path).is_absolute() and Path(path).is_file() and Path(path).stem == uid
            info = sf.info(path)
            assert info.samplerate == 16000 and info.channels == 1 and 0.3 < info.duration < 10
            assert text[uid] and text[uid] == text[uid].upper()


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_fairseq_manifest_matches(corpus, split):
    out, _ = corpus
    f = out / "fairseq"
    lines = (f / f"{split}.tsv").read_text().splitlines()
    root = Path(lines[0])
    assert root.is_absolute() and root == (out / "wav").resolve()
    for line in lines[1:]:
        rel, n = line.split("\t")
        assert sf.info(str(root / rel)).frames == int(n) > 0
    wrd = (f / f"{split}.wrd").read_text().splitlines()
    ltr = (f / f"{split}.ltr").read_text().splitlines()
    assert len(wrd) == len(ltr) == len(lines) - 1
    kaldi_text = list(_read(out / "kaldi" / split / "text").values())
    assert wrd == kaldi_text  # same (sorted) order as the Kaldi dir
    for w, l in zip(wrd, ltr):
        assert l == " ".join(w.replace(" ", "|")) + " |"  # e.g. "S E T | T H E |"
    if split == "train":
        rows = [line.split() for line in (f / "dict.ltr.txt").read_text().splitlines()]
        counts = [int(n) for _, n in rows]
        assert counts == sorted(counts, reverse=True) and rows[0][0] == "|"
        assert {s for s, _ in rows} == set("".join(ltr).replace(" ", ""))
        assert dict((s, int(n)) for s, n in rows)["|"] == sum(len(w.split()) for w in wrd)


def test_rerun_resumes_and_rebuilds_lists(corpus, tmp_path):
    out, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "kaldi/train/wav.scp").unlink()
    victim = next((copy / "wav/test").glob("*.wav"))
    victim.unlink()
    make_synthetic_corpus(copy, seed=3, num_train=8, num_valid=3, num_test=4)
    assert _digest(copy) == _digest(out)
    assert not [p for p in copy.rglob("*.tmp*")]  # no temporary files left behind


def test_rerun_with_other_seed_never_keeps_stale_wavs(corpus, tmp_path):
    out, _ = corpus
    reused = tmp_path / "reused"
    shutil.copytree(out, reused)
    make_synthetic_corpus(reused, seed=4, num_train=8, num_valid=3, num_test=4)  # same utt ids, other audio
    fresh = tmp_path / "fresh"
    make_synthetic_corpus(fresh, seed=4, num_train=8, num_valid=3, num_test=4)
    assert _digest(reused) == _digest(fresh)


@pytest.mark.skipif(not FSDD.is_dir(), reason="shared FSDD not present")
def test_fsdd(tmp_path):
    summary = prepare_fsdd(FSDD, tmp_path, max_per_split=5)
    assert summary["splits"]["test"]["count"] == summary["splits"]["train"]["count"] == 5
    assert "CC BY-SA" in (tmp_path / "README.txt").read_text()
    for split in ("train", "test"):
        d = tmp_path / "kaldi" / split
        text, scp, u2s = _read(d / "text"), _read(d / "wav.scp"), _read(d / "utt2spk")
        assert len(text) == 5 and text.keys() == scp.keys() == u2s.keys()
        assert len(set(u2s.values())) > 1  # the subset is spread over speakers
        for uid, words in text.items():
            spk, rest = uid.split("-")
            digit, idx = rest.split("_")
            assert u2s[uid] == spk and words == DIGITS[int(digit)]
            assert (int(idx) < 5) == (split == "test")
            src = sf.info(str(FSDD / "recordings" / f"{digit}_{spk}_{int(idx)}.wav"))
            info = sf.info(scp[uid])
            assert info.samplerate == 16000 and info.channels == 1 and abs(info.frames - 2 * src.frames) <= 2
        assert (tmp_path / "fairseq" / f"{split}.wrd").read_text().split() == list(text.values())
    assert (tmp_path / "fairseq/dict.ltr.txt").is_file()


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


@pytest.mark.parametrize("kw,msg", [(dict(num_train=0), "num_train=0"), (dict(num_valid=-2), "num_valid=-2"),
                                    (dict(num_test=0), "num_test=0"), (dict(jobs=0), "jobs=0"), (dict(seed=-1), "seed=-1"),
                                    (dict(text_source="books"), "text_source='books'"), (dict(reverb=150), "reverb=150")])
def test_bad_options(tmp_path, kw, msg):
    with pytest.raises(KDConfigError, match=msg):
        make_synthetic_corpus(tmp_path, **kw)
    assert not any(tmp_path.iterdir())  # nothing written


def test_unknown_voice_variant(tmp_path, monkeypatch):
    monkeypatch.setattr(make_corpus, "TEST_VARIANTS", ["m7", "nosuchvariant"])  # espeak-ng would silently ignore it
    with pytest.raises(KDConfigError, match="nosuchvariant"):
        make_synthetic_corpus(tmp_path, num_train=1, num_valid=1, num_test=1)


def test_missing_fsdd_and_tools(tmp_path, monkeypatch):
    with pytest.raises(KDConfigError, match="fsdd_dir=.*no recordings"):
        prepare_fsdd(tmp_path / "nope", tmp_path / "out")
    monkeypatch.setenv("PATH", str(tmp_path))  # an environment without espeak-ng and sox
    with pytest.raises(KDConfigError, match="espeak-ng: not found"):
        make_synthetic_corpus(tmp_path / "x", num_train=1, num_valid=1, num_test=1)


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"shared FSDD not present at {FSDD}: FSDD input errors not checked")
def test_fsdd_input_errors(tmp_path, monkeypatch):
    with pytest.raises(KDConfigError, match="max_per_split=0"):
        prepare_fsdd(FSDD, tmp_path / "out", max_per_split=0)
    monkeypatch.setenv("PATH", str(tmp_path))  # an environment without sox
    with pytest.raises(KDConfigError, match="sox: not found"):
        prepare_fsdd(FSDD, tmp_path / "out")


def test_cli(tmp_path):
    script = "-m", "tools.make_corpus"
    run = subprocess.run([sys.executable, *script, "synth", "--out", str(tmp_path / "c"), "--seed", "1", "--num-train", "2",
                          "--num-valid", "1", "--num-test", "1", "--jobs", "1"], capture_output=True, text=True, timeout=60,
                         cwd=TOOLS.parent)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"train": 2, "valid": 1, "test": 1}
    assert len(list((tmp_path / "c/wav").rglob("*.wav"))) == 4
    bad = subprocess.run([sys.executable, *script, "synth", "--out", str(tmp_path / "d"), "--num-test", "0"],
                         capture_output=True, text=True, timeout=60, cwd=TOOLS.parent)
    assert bad.returncode != 0 and "num_test=0" in bad.stderr and "Traceback" not in bad.stderr


def test_closed_vocabulary_splits_and_pool_hold_out_test_sentences():
    """wordnet-closed: disjoint test/valid/train sentence lists within the top-K words, independent of any seed;
    wordnet-pool (unlabelled pre-training texts) never contains a held-out valid/test sentence."""
    from collections import Counter

    from tools.text_sources import HELD_OUT, wordnet_closed_vocab, wordnet_pool, wordnet_sentences

    every = wordnet_sentences()
    counts = Counter(w for s in every for w in s.split())
    top = {w for w, _ in sorted(counts.items(), key=lambda x: (-x[1], x[0]))[:1000]}
    split = wordnet_closed_vocab(1000)
    assert {k: len(v) for k, v in split.items() if k != "train"} == HELD_OUT and len(split["train"]) > 1000
    assert not (set(split["test"]) & set(split["train"])) and not (set(split["valid"]) & set(split["train"]))
    assert not set(split["test"]) & set(split["valid"])
    assert all(w in top for part in split.values() for s in part for w in s.split())
    assert wordnet_closed_vocab(1000) == split  # no seed involved
    pool = set(wordnet_pool(1000))
    assert not pool & (set(split["test"]) | set(split["valid"])) and len(pool) == len(set(every)) - 700
    with pytest.raises(KDConfigError, match="vocab_size=5"):
        wordnet_closed_vocab(5)


def test_noise_snr_range_parsing():
    assert make_corpus._snr_range(None) is None and make_corpus._snr_range(20) == (20.0, 20.0)
    assert make_corpus._snr_range("10:40") == (10.0, 40.0) == make_corpus._snr_range((10, 40))
    for bad in ("loud", "40:10", "1:2:3"):
        with pytest.raises(KDConfigError, match="noise_snr_db"):
            make_corpus._snr_range(bad)
