"""Audio loading with one-line errors, Kaldi-style data dirs, a character tokenizer, greedy CTC."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .errors import KDConfigError, require


def load_audio(path: str, sample_rate: int = 16000) -> torch.Tensor:
    """Read a mono wav with soundfile -> ``(S,)`` float32 in [-1, 1].

    Raises :class:`KDConfigError` on a missing/unreadable file, a different sample rate, empty or
    multi-channel audio, naming the file and the fix.
    """
    import soundfile as sf

    require(os.path.isfile(path), f"{path}: audio file not found; fix the path in wav.scp / the manifest")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for corrupt data
        raise KDConfigError(f"{path}: cannot read audio ({type(e).__name__}); re-encode it as 16-bit PCM wav") from None
    require(sr == sample_rate, f"{path}: sample rate {sr} Hz, expected {sample_rate} Hz; resample (e.g. sox in.wav -r {sample_rate} out.wav)")
    require(data.shape[0] > 0, f"{path}: empty audio (0 samples); remove it from the data list")
    require(data.shape[1] == 1, f"{path}: {data.shape[1]} channels, expected mono (a silent downmix could mix two "
            f"speakers); downmix or pick a channel, e.g. sox in.wav -c 1 out.wav remix 1")
    return torch.from_numpy(data[:, 0])


@dataclass
class Utterance:
    uid: str
    path: str
    text: str


def read_kaldi_dir(data_dir: str) -> List[Utterance]:
    """``wav.scp`` (``uid path``) + optional ``text`` (``uid words``) -> sorted utterances."""
    scp = os.path.join(data_dir, "wav.scp")
    require(os.path.isfile(scp), f"{scp}: not found; data dirs need wav.scp (and text)")
    texts: Dict[str, str] = {}
    tpath = os.path.join(data_dir, "text")
    if os.path.isfile(tpath):
        with open(tpath, encoding="utf-8") as f:
            for line in f:
                uid, _, words = line.rstrip("\n").partition(" ")
                texts[uid] = words.strip()
    out = []
    with open(scp, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split(maxsplit=1)
            require(len(parts) == 2, f"{scp}:{n}: expected 'utt_id /path/to.wav'")
            out.append(Utterance(parts[0], parts[1].strip(), texts.get(parts[0], "")))
    return sorted(out, key=lambda u: u.uid)


def load_kaldi_audio(data_dir: str, sample_rate: int = 16000) -> List[Tuple[str, torch.Tensor, str]]:
    """A Kaldi data dir in memory: ``(uid, waveform (S,), text)`` per utterance, sorted by uid."""
    return [(u.uid, load_audio(u.path, sample_rate), u.text) for u in read_kaldi_dir(str(data_dir))]


def pad_batch(wavs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """List of ``(S_i,)`` -> ``(B, S_max)`` zero-padded + ``(B,)`` lengths."""
    lengths = torch.tensor([w.numel() for w in wavs])
    return torch.nn.utils.rnn.pad_sequence(list(wavs), batch_first=True), lengths


class CharTokenizer:
    """Characters with ``|`` as word boundary (fairseq's letter convention); index 0 is the CTC blank."""

    def __init__(self, symbols: Sequence[str]):
        self.symbols = ["<blank>"] + [s for s in symbols if s != "<blank>"]
        self.index = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> "CharTokenizer":
        return cls(sorted({c for t in texts for c in t.upper().replace(" ", "|")} | {"|"}))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text``; a character outside the token list is an error (never silently dropped)."""
        chars = text.upper().replace(" ", "|")
        unknown = sorted({c for c in chars if c not in self.index})
        require(not unknown, f"transcript {text[:60]!r}: characters {''.join(unknown)!r} are not in the token list "
                f"({len(self.symbols)} symbols); build the token list from all training transcripts or clean them")
        return [self.index[c] for c in chars]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join("".join(self.symbols[i] for i in ids if i > 0).replace("|", " ").split())


def greedy_ctc(logits: torch.Tensor, lengths: torch.Tensor) -> List[List[int]]:
    """Best path: argmax, merge repeats, drop blanks (0). ``logits (B, T, V)`` -> token ids per utterance."""
    best = logits.argmax(-1)
    out = []
    for b in range(best.size(0)):
        seq = torch.unique_consecutive(best[b, : int(lengths[b])])
        out.append([int(i) for i in seq if i != 0])
    return out


def read_wav_list(wav_scp: Optional[str] = None, manifest: Optional[str] = None) -> List[Tuple[str, str]]:
    """``(utt_id, wav path)`` pairs in list order from a Kaldi ``wav.scp`` or a fairseq manifest ``.tsv``
    (first line the root folder, then ``relative/path.wav<TAB>num_samples``; the id is the relative path)."""
    require((wav_scp is None) != (manifest is None), "pass exactly one of --wav_scp and --manifest")
    src = wav_scp or manifest
    require(os.path.isfile(src), f"{src}: not found; pass an existing {'wav.scp' if wav_scp else 'fairseq .tsv manifest'}")
    with open(src, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    out = []
    if wav_scp:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            require(len(parts) == 2, f"{src}:{n}: expected 'utt_id /path/to.wav'")
            require(not parts[1].rstrip().endswith("|"), f"{src}:{n}: pipe commands are not supported; dump the audio to "
                    "wav files first (e.g. ESPnet's dump stage)")
            out.append((parts[0], parts[1].strip()))
    else:
        require(bool(lines) and lines[0].strip(), f"{src}:1: expected the audio root folder on the first line")
        root = lines[0].strip()
        for n, line in enumerate(lines[1:], 2):
            if line.strip():
                rel = line.split("\t")[0]
                out.append((rel, os.path.join(root, rel)))
    require(bool(out), f"{src}: no utterances listed")
    return out
