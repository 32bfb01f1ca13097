#!/usr/bin/env python
"""Speech corpora for tests, recipes and benchmarks: synthetic (espeak-ng + sox) and FSDD (real).

Both write the same two outputs under ``OUT``:
- Kaldi data dirs ``OUT/kaldi/<split>/{wav.scp,text,utt2spk,spk2utt}`` (sorted, absolute paths);
- a fairseq manifest ``OUT/fairseq/{<split>.tsv,<split>.ltr,<split>.wrd,dict.ltr.txt}``.
Audio is 16 kHz mono 16-bit wav under ``OUT/wav/<split>/``. Synthetic speech is deterministic
by seed (byte-identical re-runs); the test split uses voices that training never uses.
Every list file is written atomically; a wav is reused on a re-run only if the sidecar
``.<uttid>.key`` next to it records the same synthesis parameters, so a killed run resumes
and a re-run with other options into the same ``OUT`` never keeps stale audio.

Usage (from the repository root)::

    python -m tools.make_corpus synth --out data/synth --seed 0 --num-train 100
    python -m tools.make_corpus synth --out data/bench --text-source wordnet --num-train 3000
    python -m tools.make_corpus fsdd --fsdd-dir ../shared/data/fsdd --out data/fsdd
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from kd_core.atomic import atomic_write_text
from kd_core.errors import KDConfigError, require

log = logging.getLogger("make_corpus")

# Accents x voice variants. Test speakers share neither the accent nor the variant with training.
TRAIN_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-029"]
TRAIN_VARIANTS = ["m1", "m3", "f2", "f4", "klatt", "m5"]
TEST_ACCENTS = ["en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
TEST_VARIANTS = ["m7", "f3", "klatt4"]
DIGITS = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"]
COLOURS = ["RED", "GREEN", "BLUE", "YELLOW", "BLACK", "WHITE", "ORANGE"]
OBJECTS = ["BOX", "CHAIR", "DOOR", "LAMP", "TABLE", "WINDOW", "BOOK", "CUP"]
VERBS = ["SET", "MOVE", "OPEN", "CLOSE", "PUT", "TAKE", "FIND", "BRING"]
assert not set(TRAIN_ACCENTS) & set(TEST_ACCENTS) and not set(TRAIN_VARIANTS) & set(TEST_VARIANTS)
# A fixed environment for espeak-ng and sox (no user locale, HOME or tool defaults leaking in).
_ENV_KEEP = ("PATH", "ESPEAK_DATA_PATH")


def grammar_sentence(rng: random.Random) -> str:
    """A 3-8 word command from a small grammar that covers the ten digit words (FSDD's vocabulary)."""
    digits = lambda n: [rng.choice(DIGITS) for _ in range(n)]  # noqa: E731
    form = rng.randrange(4)
    if form == 0:
        words = [rng.choice(VERBS), "THE", rng.choice(COLOURS), rng.choice(OBJECTS), "TO"] + digits(rng.randint(1, 3))
    elif form == 1:
        words = [rng.choice(VERBS)] + digits(1) + [rng.choice(COLOURS), rng.choice(OBJECTS) + "S"]
    elif form == 2:
        words = ["CALL"] + digits(rng.randint(2, 7))
    else:
        words = [rng.choice(VERBS), "THE", rng.choice(OBJECTS), "NEAR", "THE", rng.choice(COLOURS), rng.choice(OBJECTS)]
    return " ".join(words[:8])


def speakers(split: str) -> List[str]:
    """The voices (``accent+variant``) of ``split``: test voices share neither part with train/valid."""
    accents, variants = (TEST_ACCENTS, TEST_VARIANTS) if split == "test" else (TRAIN_ACCENTS, TRAIN_VARIANTS)
    return [f"{a}+{v}" for a in accents for v in variants]


def spk_id(voice: str) -> str:
    """Kaldi speaker id of an espeak voice: ``en-us+f2`` -> ``en-us_f2``."""
    return re.sub(r"[^A-Za-z0-9-]", "_", voice)


def _env() -> Dict[str, str]:
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    env.update(LC_ALL="C", LANG="C", HOME="/nonexistent", SOX_OPTS="")
    return env


def _run(cmd: List[str]) -> None:
    """Run a tool in the fixed environment; a failure names the command and its stderr."""
    res = subprocess.run(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed (exit {res.returncode}): {err[-1] if err else ''}")


def _check_tools(tools: Sequence[str] = ("espeak-ng", "sox")) -> None:
    for tool in tools:
        require(shutil.which(tool) is not None, f"{tool}: not found on PATH; install Debian's {tool} (tools/install.sh does)")


def _check_voices(voices: Sequence[str]) -> None:
    """espeak-ng silently falls back to its default for an unknown ``+variant``: check every part exists."""
    env = _env()
    listing = subprocess.run(["espeak-ng", "--voices=en"], env=env, capture_output=True, text=True).stdout
    langs = {line.split()[1] for line in listing.splitlines()[1:] if len(line.split()) > 1}
    m = re.search(r"Data at:\s*(\S+)", subprocess.run(["espeak-ng", "--version"], env=env, capture_output=True, text=True).stdout)
    vdir = Path(os.environ.get("ESPEAK_DATA_PATH") or (m.group(1) if m else "/usr/share/espeak-ng-data")) / "voices" / "!v"
    for voice in voices:
        accent, _, variant = voice.partition("+")
        require(accent in langs, f"voice {voice}: espeak-ng has no language {accent!r} (espeak-ng --voices=en); "
                                 "install Debian's espeak-ng-data")
        require(not variant or (vdir / variant).is_file(),
                f"voice {voice}: no variant file {vdir / variant}; install Debian's espeak-ng-data")


Job = Tuple[Path, str, str, int, int, float, Optional[float], int, int]


def _job_key(job: Job) -> str:
    """Digest of everything that determines a wav's bytes (not its path)."""
    return hashlib.sha1(json.dumps([str(x) for x in job[1:]]).encode()).hexdigest() + "\n"


def _synth_one(job: Job) -> bool:
    """Synthesise one utterance (espeak-ng -> sox -> optional noise); False if an up-to-date wav was reused."""
    path, text, voice, wpm, pitch, speed, snr_db, seed, reverb = job
    key_file, key = path.with_name(f".{path.stem}.key"), _job_key(job)
    if path.exists() and key_file.exists() and key_file.read_text() == key:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    if key_file.exists():
        key_file.unlink()  # the key is only (re)written once the new wav is in place
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = os.path.join(tmp, "raw.wav"), os.path.join(tmp, "out.wav")
        _run(["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "-w", raw, text])
        effects = ["speed", f"{speed:.3f}"] if speed != 1.0 else []
        if reverb:  # sox's reverberance (%), deterministic; keeps the dry signal
            effects += ["reverb", str(reverb), "gain", "-n", "-3"]
        _run(["sox", "-D", raw, "-r", "16000", "-c", "1", "-b", "16", out] + effects)
        if snr_db is not None:
            data, sr = sf.read(out, dtype="float32")
            noise = np.random.default_rng(seed).standard_normal(len(data)).astype(np.float32)
            scale = np.sqrt(np.mean(data ** 2) / (10 ** (snr_db / 10)) / np.mean(noise ** 2))
            sf.write(out, np.clip(data + scale * noise, -1, 1), sr, subtype="PCM_16")
        tmp_final = path.with_name(f".{path.name}.tmp.wav")
        shutil.move(out, tmp_final)
        os.replace(tmp_final, path)
    atomic_write_text(key_file, key)
    return True


def write_outputs(out_dir: Path, split: str, utts: Sequence[Tuple[str, str, Path, str]], dict_from: bool) -> None:
    """``utts``: (utt_id, speaker, wav path, text). Writes the Kaldi dir and the fairseq manifest of ``split``."""
    utts = sorted(utts)
    spks = [s for _, s, _, _ in utts]
    # Kaldi: sorted by utterance id, the speaker ids must come out sorted too (ids prefixed by speaker).
    assert all(u.startswith(s + "-") for u, s, _, _ in utts) and spks == sorted(spks), f"{split}: utt ids do not sort by speaker"
    kdir = out_dir / "kaldi" / split
    atomic_write_text(kdir / "wav.scp", "".join(f"{u} {p.resolve()}\n" for u, _, p, _ in utts))
    atomic_write_text(kdir / "text", "".join(f"{u} {t}\n" for u, _, _, t in utts))
    atomic_write_text(kdir / "utt2spk", "".join(f"{u} {s}\n" for u, s, _, _ in utts))
    spk2utt: Dict[str, List[str]] = {}
    for u, s, _, _ in utts:
        spk2utt.setdefault(s, []).append(u)
    atomic_write_text(kdir / "spk2utt", "".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())))
    root = (out_dir / "wav").resolve()
    fdir = out_dir / "fairseq"
    tsv = [str(root)] + [f"{p.resolve().relative_to(root)}\t{sf.info(str(p)).frames}" for _, _, p, _ in utts]
    atomic_write_text(fdir / f"{split}.tsv", "\n".join(tsv) + "\n")
    atomic_write_text(fdir / f"{split}.wrd", "".join(f"{t}\n" for *_, t in utts))
    ltr = [" ".join(t.replace(" ", "|")) + " |" for *_, t in utts]
    atomic_write_text(fdir / f"{split}.ltr", "".join(f"{line}\n" for line in ltr))
    if dict_from:
        counts = Counter(c for line in ltr for c in line.split())
        atomic_write_text(fdir / "dict.ltr.txt", "".join(f"{c} {n}\n" for c, n in sorted(counts.items(), key=lambda x: (-x[1], x[0]))))


TEXT_SOURCES = ("grammar", "wordnet", "wordnet-closed", "wordnet-pool")


def make_synthetic_corpus(out_dir, seed: int = 0, num_train: int = 100, num_valid: int = 20, num_test: int = 20, jobs: int = 2,
                          noise_snr_db=None, speed_perturb: bool = False, text_source: str = "grammar",
                          reverb: int = 0, vocab_size: int = 3000) -> dict:
    """Synthesise train/valid/test splits under ``out_dir``; returns a summary (counts, voices per split, paths).

    Texts, voices, rates and pitches depend only on ``seed`` and the counts; ``noise_snr_db`` (white noise at
    that SNR, or a ``(low, high)`` range drawn per utterance; seeded per utterance), ``speed_perturb`` (train
    only, sox speed 0.9/1.0/1.1) and ``reverb`` (sox reverberance %, about half of the utterances) draw from
    their own RNG, so they never change the texts.

    ``text_source``: ``grammar`` (a small command grammar), ``wordnet`` (any WordNet example sentence),
    ``wordnet-closed`` (sentences within the ``vocab_size`` most frequent words; each split draws from its
    own disjoint sentence list, the same for every seed), ``wordnet-pool`` (every WordNet sentence except the
    held-out valid/test sentences of ``wordnet-closed``: texts of an unlabelled pool).
    """
    for opt, n in (("num_train", num_train), ("num_valid", num_valid), ("num_test", num_test), ("jobs", jobs)):
        require(isinstance(n, int) and n > 0, f"{opt}={n}: must be a positive integer")
    require(isinstance(seed, int) and seed >= 0, f"seed={seed}: must be a non-negative integer")
    require(text_source in TEXT_SOURCES, f"text_source={text_source!r}: use one of {', '.join(TEXT_SOURCES)}")
    snr_range = _snr_range(noise_snr_db)
    require(0 <= reverb <= 100, f"reverb={reverb}: a reverberance percentage in 0..100")
    _check_tools()
    _check_voices(speakers("train") + speakers("test"))
    out_dir = Path(out_dir)
    rng = random.Random(seed)  # texts, voices' rate and pitch
    aug_rng = random.Random(f"aug-{seed}")  # augmentation draws: turning one on never changes the texts
    pools = _text_pools(text_source, vocab_size)
    if pools:
        from tools.text_sources import WORDNET_NOTICE

        atomic_write_text(out_dir / "TEXT_LICENSE.txt", WORDNET_NOTICE + "\n")
    summary = {"out": str(out_dir.resolve()), "seed": seed, "text_source": text_source, "noise_snr_db": noise_snr_db,
               "speed_perturb": speed_perturb, "reverb": reverb, "splits": {}}
    if text_source.startswith("wordnet-"):
        summary["vocab_size"] = vocab_size
    jobs_list = []
    for split, n in (("train", num_train), ("valid", num_valid), ("test", num_test)):
        voices = speakers(split)
        utts = []
        for i in range(n):
            voice = voices[i % len(voices)]
            text = rng.choice(pools[split]) if pools else grammar_sentence(rng)
            wpm, pitch = rng.randint(130, 190), rng.randint(25, 75)
            speed = aug_rng.choice([0.9, 1.0, 1.1]) if speed_perturb and split == "train" else 1.0
            uid = f"{spk_id(voice)}-{split}-{i:05d}"
            path = out_dir / "wav" / split / f"{uid}.wav"
            rev = aug_rng.choice([0, reverb]) if reverb else 0  # about half of the utterances reverberant
            snr = None if snr_range is None else (
                snr_range[0] if snr_range[0] == snr_range[1] else round(aug_rng.uniform(*snr_range), 1))
            jobs_list.append((path, text, voice, wpm, pitch, speed, snr, seed * 1_000_003 + len(jobs_list), rev))
            utts.append((uid, spk_id(voice), path, text))
        summary["splits"][split] = {"count": n, "voices": sorted({spk_id(v) for v in voices[: min(n, len(voices))]}), "utts": utts}
    train_spk = {spk_id(v) for v in speakers("train") + speakers("valid")}
    assert not train_spk & {spk_id(v) for v in speakers("test")}, "test voices must be unseen in training"
    log.info("synthesising %d utterances with %d jobs into %s", len(jobs_list), jobs, out_dir)
    with ThreadPoolExecutor(max_workers=jobs) as ex:
        made = sum(ex.map(_synth_one, jobs_list))
    log.info("%d wavs synthesised, %d up to date and reused", made, len(jobs_list) - made)
    for split, info in summary["splits"].items():
        write_outputs(out_dir, split, info.pop("utts"), dict_from=split == "train")
    summary["kaldi"], summary["fairseq"] = str(out_dir / "kaldi"), str(out_dir / "fairseq")
    atomic_write_text(out_dir / "corpus.json", json.dumps(summary, indent=1) + "\n")
    _write_readme(out_dir, "Synthetic speech: espeak-ng + sox, seeded (see corpus.json for all options).", summary)
    return summary


def _snr_range(noise_snr_db):
    """``None`` | a number | ``(low, high)`` | ``"low:high"`` -> ``None`` or ``(low, high)``."""
    if noise_snr_db is None:
        return None
    if isinstance(noise_snr_db, str):
        parts = noise_snr_db.split(":")
        require(len(parts) in (1, 2), f"noise_snr_db={noise_snr_db!r}: a number or a range 'low:high' in dB")
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise KDConfigError(f"noise_snr_db={noise_snr_db!r}: a number or a range 'low:high' in dB") from None
        noise_snr_db = vals[0] if len(vals) == 1 else tuple(vals)
    low, high = (noise_snr_db, noise_snr_db) if isinstance(noise_snr_db, (int, float)) else noise_snr_db
    require(low <= high, f"noise_snr_db={noise_snr_db}: low must not exceed high")
    return float(low), float(high)


def _text_pools(text_source: str, vocab_size: int) -> Optional[Dict[str, List[str]]]:
    """Sentence lists per split for the WordNet sources (``None`` for the grammar)."""
    if text_source == "grammar":
        return None
    from tools.text_sources import wordnet_closed_vocab, wordnet_pool, wordnet_sentences

    if text_source == "wordnet":
        every = wordnet_sentences()
        return {"train": every, "valid": every, "test": every}
    closed = wordnet_closed_vocab(vocab_size)
    if text_source == "wordnet-pool":
        closed["train"] = wordnet_pool(vocab_size)
    return closed


def _write_readme(out_dir: Path, what: str, summary: dict) -> None:
    lines = [what, ""] + [f"{split}: {info['count']} utterances; speakers: {' '.join(info.get('voices') or info['speakers'])}"
                          for split, info in summary["splits"].items()]
    lines += ["", "Audio: wav/<split>/<uttid>.wav (16 kHz mono 16-bit). Kaldi dirs: kaldi/<split>/.",
              "fairseq manifests: fairseq/<split>.{tsv,ltr,wrd}, fairseq/dict.ltr.txt (from train)."]
    atomic_write_text(out_dir / "README.txt", "\n".join(lines) + "\n")


def prepare_fsdd(fsdd_dir, out_dir, max_per_split: Optional[int] = None, jobs: int = 2) -> dict:
    """FSDD ``recordings/{digit}_{speaker}_{index}.wav`` (8 kHz) -> 16 kHz train (index 5-49) / test (0-4).

    Speaker id = FSDD speaker; utterance id = ``{speaker}-{digit}_{index:02d}``; transcript = the digit's word.
    ``max_per_split`` keeps an evenly spaced, deterministic subset of each split (spread over speakers).
    """
    rec = Path(fsdd_dir) / "recordings"
    require(rec.is_dir(), f"fsdd_dir={fsdd_dir}: no recordings/ folder; point it at the Free Spoken Digit Dataset (../shared/data/fsdd)")
    require(max_per_split is None or (isinstance(max_per_split, int) and max_per_split > 0),
            f"max_per_split={max_per_split}: must be a positive integer (or omitted for all files)")
    require(isinstance(jobs, int) and jobs > 0, f"jobs={jobs}: must be a positive integer")
    _check_tools(("sox",))
    out_dir = Path(out_dir)
    splits: Dict[str, list] = {"train": [], "test": []}
    for f in sorted(rec.glob("*.wav"), key=lambda p: p.name):
        m = re.fullmatch(r"([0-9])_([A-Za-z0-9]+)_([0-9]+)", f.stem)
        require(m is not None, f"fsdd_dir={fsdd_dir}: unexpected file {f.name}; expected recordings/{{digit}}_{{speaker}}_{{index}}.wav")
        digit, spk, idx = m.groups()
        split = "test" if int(idx) < 5 else "train"
        splits[split].append((f"{spk}-{digit}_{int(idx):02d}", spk, f, DIGITS[int(digit)]))
    require(splits["train"] and splits["test"], f"fsdd_dir={fsdd_dir}: recordings/ lacks train or test files; use the full FSDD")
    summary = {"out": str(out_dir.resolve()), "source": str(rec), "license": "CC BY-SA 4.0 (Free Spoken Digit Dataset)", "splits": {}}
    todo = []
    for split, items in splits.items():
        items = sorted(items)
        if max_per_split:
            items = items[:: max(1, len(items) // max_per_split)][:max_per_split]
        utts = [(u, s, out_dir / "wav" / split / f"{u}.wav", t) for u, s, _, t in items]
        todo += [(src, dst) for (_, _, src, _), (_, _, dst, _) in zip(items, utts) if not dst.exists()]
        splits[split] = utts
        summary["splits"][split] = {"count": len(utts), "speakers": sorted({s for _, s, _, _ in utts})}

    def convert(pair):
        src, dst = pair
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp.wav")
        _run(["sox", "-D", str(src), "-r", "16000", "-c", "1", "-b", "16", str(tmp)])
        os.replace(tmp, dst)

    log.info("resampling %d FSDD files to 16 kHz with %d jobs into %s", len(todo), jobs, out_dir)
    with ThreadPoolExecutor(max_workers=jobs) as ex:
        list(ex.map(convert, todo))
    for split, utts in splits.items():
        write_outputs(out_dir, split, utts, dict_from=split == "train")
    atomic_write_text(out_dir / "corpus.json", json.dumps(summary, indent=1) + "\n")
    _write_readme(out_dir, "Free Spoken Digit Dataset (Jakobovski et al., github.com/Jakobovski/free-spoken-digit-dataset), "
                  "CC BY-SA 4.0; resampled to 16 kHz. Official split: takes 0-4 test, 5-49 train.", summary)
    return summary


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="espeak-ng + sox synthetic corpus")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--num-train", type=int, default=100)
    s.add_argument("--num-valid", type=int, default=20)
    s.add_argument("--num-test", type=int, default=20)
    s.add_argument("--jobs", type=int, default=2)
    s.add_argument("--noise-snr-db", default=None, help="white noise at this SNR (dB), or 'low:high' drawn per utterance")
    s.add_argument("--speed-perturb", action="store_true")
    s.add_argument("--text-source", default="grammar", choices=TEXT_SOURCES)
    s.add_argument("--vocab-size", type=int, default=3000, help="wordnet-closed / wordnet-pool: the closed vocabulary's size")
    s.add_argument("--reverb", type=int, default=0, help="reverberance %% for half of the utterances (0 = off)")
    f = sub.add_parser("fsdd", help="Free Spoken Digit Dataset, resampled to 16 kHz")
    f.add_argument("--fsdd-dir", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--max-per-split", type=int, default=None)
    f.add_argument("--jobs", type=int, default=2)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if a.cmd == "synth":
            summary = make_synthetic_corpus(a.out, a.seed, a.num_train, a.num_valid, a.num_test, a.jobs, a.noise_snr_db,
                                            a.speed_perturb, a.text_source, a.reverb, a.vocab_size)
        else:
            summary = prepare_fsdd(a.fsdd_dir, a.out, a.max_per_split, a.jobs)
    except KDConfigError as e:
        sys.exit(f"error: {e}")
    print(json.dumps({k: v["count"] for k, v in summary["splits"].items()}))


if __name__ == "__main__":
    main()
