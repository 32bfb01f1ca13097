#!/usr/bin/env python3
"""WER per decoding directory with jiwer -> a Markdown table (stdout).

Usage: ``local/score.py --ref_dir data --out RESULTS.md DECODE_DIR [...]`` where each DECODE_DIR is
``<exp>/decode_<tag>/<test_set>`` holding ``1best_recog/text`` (ESPnet's layout).
"""
import argparse
from pathlib import Path

import jiwer


def read(path: Path) -> dict:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, text = line.partition(" ")
        out[key] = text.strip()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ref_dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("dirs", nargs="+")
    a = p.parse_args()
    rows = ["| model / decoding | test set | utts | WER % | CER % |", "|---|---|---|---|---|"]
    for d in map(Path, a.dirs):
        hyp_file = d / "1best_recog" / "text"
        if not hyp_file.is_file():
            continue
        ref, hyp = read(Path(a.ref_dir) / d.name / "text"), read(hyp_file)
        keys = sorted(ref)
        missing = [k for k in keys if k not in hyp]
        if missing:
            raise SystemExit(f"{hyp_file}: {len(missing)} utterances missing (e.g. {missing[0]}); rerun decoding")
        r, h = [ref[k] for k in keys], [hyp[k] or "<empty>" for k in keys]
        rows.append(f"| {d.parent.parent.name} / {d.parent.name} | {d.name} | {len(keys)} | "
                    f"{100 * jiwer.wer(r, h):.1f} | {100 * jiwer.cer(r, h):.1f} |")
    Path(a.out).write_text("\n".join(rows) + "\n", encoding="utf-8")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
