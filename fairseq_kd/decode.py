"""Greedy-CTC decoding of a ``kd_streaming_student`` checkpoint, offline or chunk by chunk, with WER.

    python -m fairseq_kd.decode --checkpoint exp/checkpoint_best.pt --data <manifest dir> --split test \
        [--streaming --piece-ms 160] [--results-path DIR]

The checkpoint is loaded with fairseq's own ``checkpoint_utils.load_model_ensemble_and_task`` (after
importing this user dir); no teacher is needed. ``--streaming`` feeds each waveform in ``--piece-ms``
pieces through the student's chunked forward with cached left context (same output as offline
decoding under the chunk mask). Writes ``hyp.<split>.txt``, ``ref.<split>.txt`` (when transcripts
exist) and ``wer.<split>.json`` (jiwer WER, utterances, decoding mode, algorithmic latency).
"""
import argparse
import json
import logging
import math
import os
import sys
from argparse import Namespace
from pathlib import Path
from typing import Dict, List, Optional

import torch

from kd_core.atomic import atomic_write_text
from kd_core.data import greedy_ctc
from kd_core.errors import KDConfigError, require
from kd_core.streaming import algorithmic_latency_ms

logger = logging.getLogger("fairseq_kd.decode")
USER_DIR = os.path.dirname(os.path.abspath(__file__))


def load_checkpoint(path: str, data: Optional[str] = None):
    """``(model, task)`` through fairseq's loader; ``data`` overrides the manifest folder."""
    from fairseq import checkpoint_utils, utils

    require(os.path.isfile(path), f"--checkpoint {path}: file not found")
    utils.import_user_module(Namespace(user_dir=USER_DIR))
    overrides = {"data": data} if data else {}
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=overrides)
    return models[0].eval(), task


def deployable_student(path: str, data: Optional[str] = None):
    """A ``kd_streaming_student`` checkpoint as the core's ``DeployableStudent`` (``python -m kd_core.export_onnx``):
    its front-end, encoder and CTC head, and the task's dictionary (index 0 ``<s>`` is the CTC blank, ``|`` the
    word boundary)."""
    from kd_core.deploy.wenet_onnx import DeployableStudent

    model, task = load_checkpoint(path, data)
    student, d = model.student, task.target_dictionary
    require(d is not None and student.ctc is not None, f"--checkpoint {path}: the student has no CTC head; the runtime decodes CTC")
    return DeployableStudent(student.frontend, student.encoder, student.ctc, list(d.symbols), word_boundary="|")


def decode_split(model, task, split: str, streaming: bool = False, piece_ms: float = 160.0) -> Dict[str, object]:
    """Decode every utterance of ``split``: ``{"hyps": [...], "refs": [...] or None, ...}``."""
    from fairseq.data.data_utils import post_process
    from tqdm import tqdm

    task.load_dataset(split)
    dataset = task.dataset(split)
    d = task.target_dictionary
    require(d is not None and model.student.ctc is not None, "the checkpoint's student has no CTC head: nothing to decode")
    student = model.student
    piece = max(1, int(round(piece_ms * student.sample_rate / 1000)))
    hyps: List[str] = []
    refs: List[str] = []
    with torch.no_grad():
        for i in tqdm(range(len(dataset)), desc=f"decode {split}", disable=None):
            item = dataset[i]
            wav = item["source"][None]
            if streaming:
                out = student.stream(wav[:, k : k + piece] for k in range(0, wav.size(1), piece))
            else:
                out = student(wav, torch.tensor([wav.size(1)]), chunk_size=None)
            ids = greedy_ctc(out.logits, out.lengths)[0]
            hyps.append(post_process(d.string(torch.tensor(ids, dtype=torch.long)), "letter"))
            if "label" in item:
                ref = [int(t) for t in item["label"] if int(t) not in (d.pad(), d.eos())]
                refs.append(post_process(d.string(torch.tensor(ref, dtype=torch.long)), "letter"))
    chunk = student.encoder.chunk_size
    latency = algorithmic_latency_ms(chunk, student.frame_shift_ms, student.encoder.right_context, student.frontend_lookahead_ms)
    return {"hyps": hyps, "refs": refs or None, "split": split, "streaming": streaming,
            "algorithmic_latency_ms": None if math.isinf(latency) else latency}


def word_error_rate(refs: List[str], hyps: List[str]) -> float:
    """jiwer WER in percent (empty references count as one deletion-free empty sentence)."""
    import jiwer

    pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    return 100.0 * jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


def main(argv=None) -> Dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="kd_streaming_student checkpoint (.pt)")
    p.add_argument("--data", default=None, help="manifest folder (default: the one the model was trained on)")
    p.add_argument("--split", default="test")
    p.add_argument("--streaming", action="store_true", help="chunk-by-chunk decoding of --piece-ms waveform pieces")
    p.add_argument("--piece-ms", type=float, default=160.0)
    p.add_argument("--results-path", default=None, help="folder for hyp/ref/wer files (default: next to the checkpoint)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        model, task = load_checkpoint(args.checkpoint, args.data)
        res = decode_split(model, task, args.split, args.streaming, args.piece_ms)
    except KDConfigError as e:
        raise SystemExit(f"fairseq_kd.decode: error: {e}") from None
    out = Path(args.results_path or Path(args.checkpoint).parent)
    tag = f"{args.split}{'.streaming' if args.streaming else ''}"
    atomic_write_text(out / f"hyp.{tag}.txt", "".join(h + "\n" for h in res["hyps"]))
    summary = {k: res[k] for k in ("split", "streaming", "algorithmic_latency_ms")}
    summary.update(checkpoint=str(args.checkpoint), utterances=len(res["hyps"]))
    if res["refs"] is not None:
        atomic_write_text(out / f"ref.{tag}.txt", "".join(r + "\n" for r in res["refs"]))
        summary["wer"] = word_error_rate(res["refs"], res["hyps"])
    atomic_write_text(out / f"wer.{tag}.json", json.dumps(summary, indent=1) + "\n")
    logger.info("%s", json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
