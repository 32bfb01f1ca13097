"""Benchmark data: the teacher's labelled set + FSDD, the merged training list, in-memory splits and batching.

Layout under the work dir ``D``:
- ``D/data``: synthetic corpus (``tools/make_corpus.py`` with the zoo teacher's labelled-set arguments: closed
  WordNet vocabulary, test voices unseen in training);
- ``D/fsdd``: FSDD resampled to 16 kHz, official split (takes 0-4 test, 5-49 train);
- ``D/lists/train``: Kaldi dir of the training set every student uses = synthetic train + FSDD train,
  minus utterances too short for CTC at the student's 40 ms frame rate;
- ``D/lists/tokens.txt``: the teacher's letter inventory in its output order (``|`` = word boundary), so a
  student's CTC index ``i`` is the teacher's (LF-MMI reads the teacher's posteriors); shared by all students;
- ``D/lists/fbank_stats.pt``: global log-Mel mean/std of the training audio per Mel-bin count (the students' front-ends).
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import torch

from kd_core.atomic import atomic_torch_save, atomic_write_text
from kd_core.data import CharTokenizer, load_audio, load_kaldi_audio, read_kaldi_dir
from kd_core.errors import require
from kd_core.students.frontends import valid_conv_length

log = logging.getLogger("bench.data")

Utt = Tuple[str, torch.Tensor, str]  # (utt id, waveform (S,), transcript)


def student_frontend(cfg) -> torch.nn.Module:
    """The students' front-end as configured (its ``receptive_field``/``stride`` in samples set the frame count)."""
    from kd_core.students.frontends import FRONTENDS

    return FRONTENDS[cfg.student["frontend"]](**cfg.student["frontend_conf"])


def ctc_frames_needed(ids: Sequence[int]) -> int:
    """Frames a CTC alignment of ``ids`` needs: one per token plus a blank between equal neighbours."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


def prepare_data(out: Path, cfg, fsdd_dir: str) -> Dict:
    """Synthesise the corpus, prepare FSDD, write the merged training list, tokens and fbank stats."""
    from tools import make_corpus as mc

    from tools.zoo_eval import fairseq_letter_symbols

    frontend = student_frontend(cfg)
    summary = mc.make_synthetic_corpus(out / "data", jobs=2, **cfg.corpus)
    fsdd = mc.prepare_fsdd(fsdd_dir, out / "fsdd", max_per_split=cfg.fsdd_max_per_split, jobs=2)
    synth_train = read_kaldi_dir(str(out / "data/kaldi/train"))
    train = synth_train + read_kaldi_dir(str(out / "fsdd/kaldi/train"))
    # the teacher's outputs: index 0 (fairseq's <s>) is the CTC blank, then <pad> </s> <unk> and its letters
    tok = CharTokenizer(fairseq_letter_symbols(teacher_files(cfg)[1] / "dict.ltr.txt")[1:])
    kept, dropped, stats_wavs = [], [], []
    dur = {"synth_train": 0.0, "fsdd_train": 0.0}
    for i, u in enumerate(train):
        wav = load_audio(u.path)
        dur["synth_train" if i < len(synth_train) else "fsdd_train"] += wav.numel() / 16000 / 3600
        frames = int(valid_conv_length(torch.tensor(wav.numel()), frontend.receptive_field, frontend.stride))
        (kept if frames >= ctc_frames_needed(tok.encode(u.text)) else dropped).append(u)
        if i % max(1, len(train) // 200) == 0:
            stats_wavs.append(wav)
    lists = out / "lists"
    kdir = lists / "train"
    atomic_write_text(kdir / "wav.scp", "".join(f"{u.uid} {u.path}\n" for u in kept))
    atomic_write_text(kdir / "text", "".join(f"{u.uid} {u.text}\n" for u in kept))
    atomic_write_text(lists / "tokens.txt", "".join(f"{s}\n" for s in tok.symbols[1:]))
    stats = {}
    for n_mels in student_mels(cfg):
        mean, std = fbank_stats(stats_wavs, n_mels)
        stats[n_mels] = {"mean": mean, "std": std}
    atomic_torch_save(stats, lists / "fbank_stats.pt")
    info = {"synth": {k: v["count"] for k, v in summary["splits"].items()},
            "fsdd": {k: v["count"] for k, v in fsdd["splits"].items()},
            "train_utts": len(kept), "train_dropped_too_short": [u.uid for u in dropped],
            "hours": {k: round(v, 3) for k, v in dur.items()}, "vocab": len(tok)}
    log.info("training set: %d utterances (%d dropped as too short for CTC at 40 ms), %.2f h synthetic + %.2f h FSDD",
             len(kept), len(dropped), dur["synth_train"], dur["fsdd_train"])
    return info


def teacher_files(cfg) -> Tuple[Path, Path]:
    """``(checkpoint, folder of its dict.ltr.txt)`` of the benchmark's teacher."""
    from tools.build_zoo import ROOT

    ckpt = ROOT / cfg.teacher_path
    return ckpt, ckpt.parent


def fbank_stats(wavs: Sequence[torch.Tensor], n_mels: int = 80) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-bin log-Mel mean/std (25 ms / 10 ms windows, as ``FbankConv2d``) of ``wavs``, for ``n_mels`` bins."""
    from kd_core.students.frontends import FbankConv2d

    fe = FbankConv2d(n_mels=n_mels)
    feats = torch.cat([fe.log_mel(w[None])[0] for w in wavs])
    return feats.mean(0), feats.std(0)


def student_mels(cfg) -> List[int]:
    """Mel-bin counts of the suite's students (the configured student and the presets of the methods suite / the rnnt
    suite's teacher)."""
    from kd_core.students.presets import preset_conf

    from .bench_config import PRESET_ROWS, RNNT_TEACHER_SHAPE

    shapes = {"methods": PRESET_ROWS, "rnnt": (RNNT_TEACHER_SHAPE,)}.get(cfg.suite, ())
    return sorted({cfg.student["frontend_conf"]["n_mels"]} | {preset_conf(n)["frontend_conf"]["n_mels"] for n in shapes})


def student_fbank_stats(out: Path, n_mels: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The students' global log-Mel mean/std for ``n_mels`` bins (computed by :func:`prepare_data`)."""
    st = torch.load(out / "lists/fbank_stats.pt")
    st = st if "mean" in st else st[n_mels]  # a work dir from before per-bin-count stats holds one pair
    require(st["mean"].numel() == n_mels, f"{out}/lists/fbank_stats.pt: no statistics for {n_mels} Mel bins; --redo data")
    return st["mean"], st["std"]


def tokenizer(out: Path) -> CharTokenizer:
    return CharTokenizer((out / "lists/tokens.txt").read_text(encoding="utf-8").split())


def load_split(data_dir: Path) -> List[Utt]:
    return load_kaldi_audio(str(data_dir))


def split_dirs(out: Path) -> Dict[str, Path]:
    return {"train": out / "lists/train", "valid": out / "data/kaldi/valid", "test": out / "data/kaldi/test",
            "fsdd_test": out / "fsdd/kaldi/test"}


def length_groups(data: Sequence[Utt], batch_s: float, sample_rate: int = 16000) -> List[List[int]]:
    """Length-sorted groups of indices holding at most ``batch_s`` seconds of padded audio each."""
    order = sorted(range(len(data)), key=lambda i: (data[i][1].numel(), data[i][0]))
    groups, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * data[i][1].numel() > batch_s * sample_rate:
            groups.append(cur)
            cur = []
        cur.append(i)
    return groups + [cur] if cur else groups


def duration_batches(data: Sequence[Utt], batch_s: float, seed: int, sorted_first_epoch: bool = False) -> Iterator[List[int]]:
    """Endless :func:`length_groups` batches in a seeded random order per epoch (the same sequence for
    every model given the seed); ``sorted_first_epoch``: the first epoch goes from the shortest to the
    longest utterances (SortaGrad, Amodei et al. 2016: CTC leaves its all-blank start sooner)."""
    groups = length_groups(data, batch_s)
    rng = random.Random(seed)
    if sorted_first_epoch:
        yield from list(groups)
    while True:
        rng.shuffle(groups)
        yield from groups


def collate(batch: Sequence[Utt], tok: CharTokenizer):
    """-> ``wav (B, S)``, ``lengths (B,)``, CTC ``targets (B, U)``, ``target_lengths (B,)``."""
    wavs = [w for _, w, _ in batch]
    ids = [torch.tensor(tok.encode(t), dtype=torch.long) for _, _, t in batch]
    return (torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), torch.tensor([w.numel() for w in wavs]),
            torch.nn.utils.rnn.pad_sequence(ids, batch_first=True), torch.tensor([len(i) for i in ids]))


def labelled_subset(data: Sequence[Utt], fraction: float) -> List[int]:
    """Indices of the utterances that keep their transcript in the low-resource setting: every ``round(1 / fraction)``-th
    utterance in id order (synthetic and FSDD in proportion); the others are audio only."""
    step = max(1, round(1 / fraction))
    order = sorted(range(len(data)), key=lambda i: data[i][0])
    return sorted(order[::step])
