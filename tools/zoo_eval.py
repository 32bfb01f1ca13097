"""WER of a zoo CTC teacher, decoded through the project's own loader (``load_teacher("fairseq", ...)``)
and greedy CTC (``kd_core.data.greedy_ctc``), scored with jiwer. Used by ``tools/build_zoo.py``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Mapping

N_SPECIAL = 4  # fairseq Dictionary: <s> (the CTC blank of fairseq's ctc criterion) <pad> </s> <unk>


def fairseq_letter_symbols(dict_file: Path) -> List[str]:
    """Output symbols of a fairseq letter CTC model: 4 specials, then ``dict.ltr.txt`` in file order."""
    syms = [line.split()[0] for line in Path(dict_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    return ["<s>", "<pad>", "</s>", "<unk>"] + syms


def letters_to_words(ids: List[int], symbols: List[str]) -> str:
    """Token ids (blank already removed) -> words; ``|`` is the word boundary, specials are dropped."""
    return " ".join("".join(symbols[i] for i in ids if i >= N_SPECIAL).replace("|", " ").split())


def evaluate_ctc_teacher(checkpoint: Path, dict_dir: Path, manifests: Mapping[str, Path], threads: int = 1,
                         batch: int = 8) -> Dict[str, Dict]:
    """Greedy-CTC WER/CER of a fairseq CTC checkpoint on each manifest (``.tsv`` + ``.wrd`` beside it)."""
    import jiwer
    import torch

    from kd_core.data import greedy_ctc, load_audio, pad_batch
    from kd_core.teachers import load_teacher

    torch.set_num_threads(threads)
    teacher = load_teacher("fairseq", str(checkpoint), data_dir=str(dict_dir))
    symbols = fairseq_letter_symbols(Path(dict_dir) / "dict.ltr.txt")
    assert len(symbols) == teacher.vocab_size, f"{dict_dir}/dict.ltr.txt: {len(symbols)} symbols, model has {teacher.vocab_size}"
    out = {}
    for name, tsv in manifests.items():
        lines = Path(tsv).read_text(encoding="utf-8").splitlines()
        paths = [os.path.join(lines[0], line.split("\t")[0]) for line in lines[1:] if line]
        refs = Path(tsv).with_suffix(".wrd").read_text(encoding="utf-8").splitlines()
        order = sorted(range(len(paths)), key=lambda i: os.path.getsize(paths[i]))
        by_index = {}
        with torch.no_grad():
            for s in range(0, len(order), batch):
                idx = order[s:s + batch]
                wav, lens = pad_batch([load_audio(paths[i]) for i in idx])
                t = teacher(wav, lens)
                for i, ids in zip(idx, greedy_ctc(t.logits, t.lengths)):
                    by_index[i] = letters_to_words(ids, symbols)
        hyps = [by_index[i] for i in range(len(paths))]
        out[name] = {"utterances": len(paths), "wer": round(100 * jiwer.wer(refs, hyps), 2),
                     "cer": round(100 * jiwer.cer(refs, hyps), 2), "hyps": hyps}
    return out
