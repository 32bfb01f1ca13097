"""``python -m kd_core.cache``: build a teacher-target cache or report its status.

Usage::

    python -m kd_core.cache build --teacher_type fairseq --teacher_path hubert.pt --layers 4,8,12 \\
        [--logits] [--dtype float16] --out exp/teacher_cache (--wav_scp data/train/wav.scp | --manifest train.tsv) \\
        [--shard_size 256] [--batch_size 8] [--device cpu]
    python -m kd_core.cache status --out exp/teacher_cache      # every cache under the folder (or one cache dir)

``build`` is resumable (see :mod:`.build`); ``status`` exits with 1 when a cache is incomplete. The status
lines (or ``--json``) on stdout are the command's output; progress and diagnostics go to logging.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Optional, Sequence

from ..data import read_wav_list
from ..errors import KDConfigError, require, write_error
from ..teachers import TEACHER_TYPES
from .build import build_cache, find_caches, format_status
from .keys import check_layers, parse_layers, teacher_fingerprint


def _parse_conf(items: Sequence[str]) -> dict:
    import yaml

    conf = {}
    for item in items:
        key, eq, value = item.partition("=")
        require(bool(eq) and bool(key), f"--teacher_conf {item!r}: expected key=value, e.g. normalize_waveform=true")
        conf[key] = yaml.safe_load(value)
    return conf


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kd_core.cache", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compute and store teacher targets (resumable)")
    b.add_argument("--teacher_type", required=True, choices=TEACHER_TYPES)
    b.add_argument("--teacher_path", required=True)
    b.add_argument("--teacher_conf", action="append", default=[], help="loader option key=value (repeatable)")
    b.add_argument("--layers", required=True, help="teacher layers to store, e.g. 4,8,12 (0 = input of layer 1), or 'all'")
    b.add_argument("--logits", action="store_true", help="also store the CTC logits")
    b.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    b.add_argument("--out", required=True, help="cache root folder")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--wav_scp")
    src.add_argument("--manifest", help="fairseq manifest (.tsv)")
    b.add_argument("--shard_size", type=int, default=256)
    b.add_argument("--batch_size", type=int, default=8)
    b.add_argument("--device", default="cpu")
    b.add_argument("--no_progress", action="store_true")
    s = sub.add_parser("status", help="utterances cached / expected and whether the build completed")
    s.add_argument("--out", required=True, help="cache root folder (or one cache directory in it)")
    s.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if a.cmd == "build":
            require(a.shard_size > 0, f"--shard_size {a.shard_size}: must be a positive number of utterances")
            utts = read_wav_list(a.wav_scp, a.manifest)
            conf = _parse_conf(a.teacher_conf)
            from ..teachers import load_teacher  # imports the toolkit of teacher_type only

            teacher = load_teacher(a.teacher_type, a.teacher_path, **conf).to(a.device)
            layers = range(teacher.num_layers + 1) if a.layers == "all" else parse_layers(a.layers, "--layers")
            check_layers(layers, teacher.num_layers, "--layers")
            require(not a.logits or teacher.vocab_size is not None, f"--logits: teacher_path={a.teacher_path} has no CTC "
                    "head (no logits); drop --logits")
            fingerprint = teacher_fingerprint(a.teacher_type, a.teacher_path, teacher=teacher, **conf)
            cache = build_cache(a.out, teacher, fingerprint, layers, utts, a.dtype, a.logits, a.shard_size, a.batch_size,
                                source=os.path.abspath(a.wav_scp or a.manifest), progress=not a.no_progress)
            print(format_status(cache.status()))
            return 0
        caches = find_caches(a.out)
        require(bool(caches), f"{a.out}: no teacher cache in it; build one with 'python -m kd_core.cache build --out {a.out} ...'")
        stats = [c.status() for c in caches]
        print(json.dumps(stats, indent=1) if a.json else "\n".join(format_status(s) for s in stats))
        return 0 if all(s["complete"] for s in stats) else 1
    except KDConfigError as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # e.g. --out under a file, a read-only or full disk
        sys.exit(f"error: {write_error(e, 'teacher cache')}")
