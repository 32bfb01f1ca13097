"""Hard targets: decode audio with any teacher and write its 1-best as transcripts (a Kaldi data dir).

The hard-target half of RNN-T KD (Hwang et al. 2022) and the noisy-student loop: a teacher labels unlabelled audio,
a student trains on those labels with its ordinary loss (CTC or transducer) plus SpecAugment, and may become the next
round's teacher (one more run of the same stages). Teachers: any loaded :class:`~kd_core.teachers.base.Teacher` with
a CTC head (the zoo's, fairseq, torchaudio, ESPnet, Hugging Face; greedy best path) or a transducer (ESPnet
``--decoder transducer`` or a core ``TransducerStudent``; frame-synchronous greedy search).

Confidence of an utterance (for ``min_confidence``): the geometric mean over its frames of the best path's posterior,
``exp(mean_t log max_k p_t(k))`` for CTC; for transducers the geometric mean of the chosen outputs' posteriors along
the greedy path (blanks included). Empty hypotheses are dropped (counted); nothing kept is a one-line error.

``python -m kd_core.pseudo_label --teacher_type fairseq --teacher_path zoo/hubert_mini_ctc/hubert_mini_ctc.pt
--dict_dir zoo/hubert_mini_ctc --data_dir data/unlabelled --out_dir data/unlabelled_pseudo [--min_confidence 0.5]``
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from .atomic import atomic_write_text
from .data import greedy_ctc, load_audio, pad_batch, read_kaldi_dir
from .errors import require

logger = logging.getLogger(__name__)

#: word-boundary symbols of the usual token inventories: fairseq letters, sentencepiece, ESPnet chars
WORD_BOUNDARIES = ("|", "\u2581", "<space>")


def ids_to_text(ids: Sequence[int], symbols: Sequence[str]) -> str:
    """Token ids (blank removed) -> words: pieces concatenated, word boundaries (:data:`WORD_BOUNDARIES`) become spaces,
    special symbols ``<...>`` are dropped."""
    out = []
    for i in ids:
        s = symbols[i]
        if s in WORD_BOUNDARIES:
            out.append(" ")
        elif not (s.startswith("<") and s.endswith(">")):
            out.append(s.replace("\u2581", " "))
    return " ".join("".join(out).split())


def fairseq_letter_symbols(dict_file) -> List[str]:
    """Output symbols of a fairseq letter CTC model: 4 specials (``<s>`` = fairseq's CTC blank), then ``dict.ltr.txt``."""
    require(os.path.isfile(dict_file), f"{dict_file}: not found; pass the folder of the dict.ltr.txt the teacher was fine-tuned with")
    syms = [line.split()[0] for line in Path(dict_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    return ["<s>", "<pad>", "</s>", "<unk>"] + syms


@dataclass
class Hypothesis:
    ids: List[int]
    confidence: float


def ctc_hypotheses(logits: torch.Tensor, lengths: torch.Tensor) -> List[Hypothesis]:
    """Greedy CTC (:func:`~kd_core.data.greedy_ctc`) with the best path's geometric-mean posterior per utterance."""
    best = logits.float().log_softmax(-1).max(-1).values  # (B, T)
    valid = torch.arange(best.size(1))[None, :] < lengths[:, None]
    conf = ((best * valid).sum(1) / lengths.clamp(min=1)).exp()
    return [Hypothesis(ids, float(c)) for ids, c in zip(greedy_ctc(logits, lengths), conf)]


def transducer_hypotheses(teacher, wav: torch.Tensor, lengths: torch.Tensor, max_symbols: int = 3) -> List[Hypothesis]:
    """Frame-synchronous greedy search of a transducer teacher (any prediction network: it is re-run on the emitted
    prefix, so an LSTM's state needs no special handling): at each frame emit the joint's argmax until blank, at most
    ``max_symbols`` tokens per frame."""
    enc, enc_lengths = teacher.transducer_encode(wav, lengths)
    joint, out = teacher.transducer_joint(), []
    with torch.no_grad():
        for b in range(enc.size(0)):
            ids, logp = [], []
            pred = teacher.transducer_predict(torch.zeros(1, 0, dtype=torch.long))[:, -1]
            for t in range(int(enc_lengths[b])):
                for _ in range(max_symbols):
                    lp = joint(enc[b:b + 1, t], pred).float().log_softmax(-1)[0]
                    k = int(lp.argmax())
                    logp.append(float(lp[k]))
                    if k == teacher.blank_id:
                        break
                    ids.append(k)
                    pred = teacher.transducer_predict(torch.tensor([ids]))[:, -1]
            out.append(Hypothesis(ids, float(torch.tensor(logp).mean().exp()) if logp else 0.0))
    return out


def decode_audio(teacher, paths: Sequence[str], batch: int = 8, progress: bool = False) -> List[Hypothesis]:
    """1-best of every audio file in ``paths`` (order kept), batched by file size; CTC or transducer teacher."""
    from tqdm import tqdm

    order = sorted(range(len(paths)), key=lambda i: os.path.getsize(paths[i]))
    found = {}
    with torch.no_grad(), tqdm(total=len(paths), desc="pseudo-labels", unit="utt", disable=not progress) as bar:
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            wav, lens = pad_batch([load_audio(paths[i], teacher.sample_rate) for i in idx])
            if getattr(teacher, "is_transducer", False):
                hyps = transducer_hypotheses(teacher, wav, lens)
            else:
                out = teacher(wav, lens)
                require(out.logits is not None, f"a {type(teacher).__name__} without a CTC head cannot label audio; use a "
                        "fine-tuned (CTC or transducer) teacher")
                hyps = ctc_hypotheses(out.logits, out.lengths)
            found.update(zip(idx, hyps))
            bar.update(len(idx))
    return [found[i] for i in range(len(paths))]


def write_pseudo_labelled_dir(data_dir: str, out_dir: str, teacher, symbols: Sequence[str], min_confidence: float = 0.0,
                              batch: int = 8, progress: bool = True) -> Tuple[int, int]:
    """Decode every utterance of Kaldi ``data_dir`` and write ``out_dir`` (``wav.scp``, ``text``, ``utt2spk``,
    ``spk2utt`` of the kept utterances, ``confidence`` of all, ``pseudo_label.json``). Returns ``(kept, dropped)``."""
    require(0.0 <= min_confidence <= 1.0, f"--min_confidence {min_confidence}: a posterior in [0, 1]")
    require(len(symbols) == teacher.vocab_size, f"token list: {len(symbols)} symbols, but the teacher outputs "
            f"{teacher.vocab_size}; pass the token list / dict.ltr.txt the teacher was trained with")
    utts = read_kaldi_dir(data_dir)
    require(bool(utts), f"{data_dir}/wav.scp: no utterances")
    hyps = decode_audio(teacher, [u.path for u in utts], batch, progress)
    texts = [ids_to_text(h.ids, symbols) for h in hyps]
    kept = [(u, t, h) for u, t, h in zip(utts, texts, hyps) if t and h.confidence >= min_confidence]
    empty = sum(1 for t in texts if not t)
    best = max((h.confidence for h, t in zip(hyps, texts) if t), default=0.0)
    require(bool(kept), f"{data_dir}: no pseudo-label kept ({empty} of {len(utts)} hypotheses empty, best confidence "
            f"{best:.3f} < --min_confidence {min_confidence}); lower --min_confidence or use a better teacher")
    spk = {}
    u2s = Path(data_dir) / "utt2spk"
    if u2s.is_file():
        spk = dict(line.split(maxsplit=1) for line in u2s.read_text(encoding="utf-8").splitlines() if line.strip())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_spk = {}
    for u, _, _ in kept:
        by_spk.setdefault(spk.get(u.uid, u.uid).strip(), []).append(u.uid)
    atomic_write_text(out / "wav.scp", "".join(f"{u.uid} {u.path}\n" for u, _, _ in kept))
    atomic_write_text(out / "text", "".join(f"{u.uid} {t}\n" for u, t, _ in kept))
    atomic_write_text(out / "utt2spk", "".join(f"{u.uid} {spk.get(u.uid, u.uid).strip()}\n" for u, _, _ in kept))
    atomic_write_text(out / "spk2utt", "".join(f"{s} {' '.join(v)}\n" for s, v in sorted(by_spk.items())))
    atomic_write_text(out / "confidence", "".join(f"{u.uid} {h.confidence:.4f}\n" for u, h in zip(utts, hyps)))
    summary = {"source": str(data_dir), "utterances": len(utts), "kept": len(kept), "empty": empty,
               "below_confidence": len(utts) - len(kept) - empty, "min_confidence": min_confidence}
    atomic_write_text(out / "pseudo_label.json", json.dumps(summary, indent=1) + "\n")
    logger.info("pseudo-labels: kept %d of %d utterances (%d empty) -> %s", len(kept), len(utts), empty, out)
    return len(kept), len(utts) - len(kept)


def teacher_symbols(teacher, dict_dir: Optional[str] = None, token_list: Optional[str] = None) -> List[str]:
    """The teacher's output symbols: a fairseq ``dict.ltr.txt`` folder, a token-list file (one token per line, ESPnet's
    ``tokens.txt``), or, for ESPnet teachers, the model's own ``token_list``."""
    if dict_dir:
        return fairseq_letter_symbols(Path(dict_dir) / "dict.ltr.txt")
    if token_list:
        require(os.path.isfile(token_list), f"--token_list {token_list}: not found")
        return [line.rstrip("\n") for line in open(token_list, encoding="utf-8")]
    own = getattr(getattr(teacher, "model", None), "token_list", None)
    require(own is not None, "the teacher's token list is unknown: pass --dict_dir (fairseq letters) or --token_list")
    return list(own)


def main(argv=None, loader_conf=None) -> None:
    """The CLI (module doc); ``loader_conf(teacher_type, conf) -> conf`` lets a toolkit adapter resolve its own
    ``--teacher_conf`` keys (``espnet_kd.pseudo_label``: ``task=asr_kd``)."""
    import argparse
    import sys

    from .errors import KDConfigError
    from .teachers import TEACHER_TYPES, load_teacher

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher_type", required=True, choices=list(TEACHER_TYPES))
    p.add_argument("--teacher_path", required=True)
    p.add_argument("--teacher_conf", action="append", default=[], help="loader option key=value (repeatable)")
    p.add_argument("--dict_dir", help="fairseq letter teachers: folder of dict.ltr.txt")
    p.add_argument("--token_list", help="token list file (one per line, blank first), when not in the teacher")
    p.add_argument("--data_dir", required=True, help="Kaldi data dir of the audio to label (wav.scp [, utt2spk])")
    p.add_argument("--out_dir", required=True, help="Kaldi data dir written: wav.scp, text, utt2spk, spk2utt, confidence")
    p.add_argument("--min_confidence", type=float, default=0.0, help="drop hypotheses below this confidence (0-1)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s pseudo_label %(message)s")
    torch.set_num_threads(a.threads)
    try:
        require(all("=" in kv for kv in a.teacher_conf), f"--teacher_conf {a.teacher_conf}: use key=value")
        conf = dict(kv.split("=", 1) for kv in a.teacher_conf)
        teacher = load_teacher(a.teacher_type, a.teacher_path, **(loader_conf(a.teacher_type, conf) if loader_conf else conf))
        symbols = teacher_symbols(teacher, a.dict_dir, a.token_list)
        write_pseudo_labelled_dir(a.data_dir, a.out_dir, teacher, symbols, a.min_confidence, a.batch)
    except KDConfigError as e:
        sys.exit(f"pseudo_label: error: {e}")


if __name__ == "__main__":
    main()
