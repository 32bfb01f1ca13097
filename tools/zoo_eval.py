"""WER of a zoo CTC teacher, decoded through the project's own loader (``load_teacher("fairseq", ...)``)
and greedy CTC (``kd_core.data.greedy_ctc``), scored with jiwer. Used by ``tools/build_zoo.py``."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List, Mapping

from kd_core.pseudo_label import fairseq_letter_symbols  # noqa: F401 - re-exported: tools and tests read it here


def letters_to_words(ids: List[int], symbols: List[str]) -> str:
    """Token ids (blank already removed) -> words (:func:`kd_core.pseudo_label.ids_to_text`: ``|`` is the word
    boundary, specials are dropped)."""
    from kd_core.pseudo_label import ids_to_text

    return ids_to_text(ids, symbols)


def decode_ctc_teacher(teacher, symbols: List[str], paths: List[str], batch: int = 8) -> List[str]:
    """Greedy-CTC transcripts (words) of the audio files ``paths``, batched by length
    (:func:`kd_core.pseudo_label.decode_audio`, the one decoding loop)."""
    from kd_core.pseudo_label import decode_audio

    return [letters_to_words(h.ids, symbols) for h in decode_audio(teacher, paths, batch)]


def load_ctc_teacher(checkpoint: Path, dict_dir: Path):
    """``(teacher, symbols)``: a fairseq letter-CTC checkpoint through ``load_teacher`` and its output symbols."""
    from kd_core.errors import require
    from kd_core.teachers import load_teacher

    teacher = load_teacher("fairseq", str(checkpoint), data_dir=str(dict_dir))
    symbols = fairseq_letter_symbols(Path(dict_dir) / "dict.ltr.txt")
    require(len(symbols) == teacher.vocab_size, f"{dict_dir}/dict.ltr.txt: {len(symbols)} symbols, but {checkpoint} "
            f"outputs {teacher.vocab_size}; pass the dict the model was fine-tuned with")
    return teacher, symbols


def evaluate_ctc_teacher(checkpoint: Path, dict_dir: Path, manifests: Mapping[str, Path], threads: int = 1,
                         batch: int = 8) -> Dict[str, Dict]:
    """Greedy-CTC WER/CER of a fairseq CTC checkpoint on each manifest (``.tsv`` + ``.wrd`` beside it)."""
    import jiwer
    import torch

    torch.set_num_threads(threads)
    teacher, symbols = load_ctc_teacher(checkpoint, dict_dir)
    out = {}
    for name, tsv in manifests.items():
        lines = Path(tsv).read_text(encoding="utf-8").splitlines()
        paths = [os.path.join(lines[0], line.split("\t")[0]) for line in lines[1:] if line]
        refs = Path(tsv).with_suffix(".wrd").read_text(encoding="utf-8").splitlines()
        hyps = decode_ctc_teacher(teacher, symbols, paths, batch)
        out[name] = {"utterances": len(paths), "wer": round(100 * jiwer.wer(refs, hyps), 2),
                     "cer": round(100 * jiwer.cer(refs, hyps), 2), "hyps": hyps}
    return out


def decode_wav_scp(checkpoint: Path, dict_dir: Path, wav_scp: Path, out_dir: Path, batch: int = 8) -> int:
    """ESPnet layout: decode every ``wav.scp`` entry, write ``out_dir/1best_recog/text`` (``utt-id words``) and
    ``out_dir/model_info.json`` (parameters, for the recipe's score table); returns the number of utterances."""
    import json

    from kd_core.atomic import atomic_write_text

    teacher, symbols = load_ctc_teacher(checkpoint, dict_dir)
    entries = [line.split(maxsplit=1) for line in Path(wav_scp).read_text(encoding="utf-8").splitlines() if line.strip()]
    hyps = decode_ctc_teacher(teacher, symbols, [path for _, path in entries], batch)
    (Path(out_dir) / "1best_recog").mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out_dir) / "1best_recog/text", "".join(f"{key} {h}\n" for (key, _), h in zip(entries, hyps)))
    info = {"params_m": sum(p.numel() for p in teacher.parameters()) / 1e6, "latency": "full context", "model": str(checkpoint)}
    atomic_write_text(Path(out_dir).parent.parent / "model_info.json", json.dumps(info, indent=1) + "\n")
    return len(entries)


def main(argv=None) -> None:
    """``python -m tools.zoo_eval --checkpoint X.pt --dict_dir D --wav_scp S --out_dir O``: ESPnet-layout decoding."""
    import argparse
    import logging

    import torch

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--checkpoint", required=True, help="fairseq letter-CTC checkpoint (e.g. zoo/hubert_mini_ctc/hubert_mini_ctc.pt)")
    p.add_argument("--dict_dir", required=True, help="folder with its dict.ltr.txt")
    p.add_argument("--wav_scp", required=True)
    p.add_argument("--out_dir", required=True, help="writes 1best_recog/text here (ESPnet's layout)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s zoo_eval %(message)s")
    torch.set_num_threads(a.threads)
    from kd_core.errors import KDConfigError

    try:
        n = decode_wav_scp(Path(a.checkpoint), Path(a.dict_dir), Path(a.wav_scp), Path(a.out_dir))
    except KDConfigError as e:
        sys.exit(f"zoo_eval: error: {e}")
    logging.info("decoded %d utterances -> %s/1best_recog/text", n, a.out_dir)


if __name__ == "__main__":
    main()
