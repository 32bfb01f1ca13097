#!/usr/bin/env python3
"""WER per decoding directory with jiwer, plus each model's size, algorithmic latency and real-time factor -> Markdown.

Usage: ``local/score.py --ref_dir dump/raw --out exp/RESULTS.md DECODE_DIR [...]`` where each DECODE_DIR is
``<exp>/decode_<tag>/<test_set>`` holding ``1best_recog/text`` (ESPnet's layout). RTF: the decoding command's wall
time (``decode_seconds``, written by asr_kd.sh; model loading included, one process) over the test set's audio.
A zoo teacher decoded by ``tools/zoo_eval.py`` describes itself in ``<exp>/model_info.json``.
"""
import argparse
import json
import math
from pathlib import Path

import jiwer
import torch
import yaml


def read(path: Path) -> dict:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, text = line.partition(" ")
        out[key] = text.strip()
    return out


def model_info(exp: Path) -> tuple:
    """(parameters in millions without training-only KD heads, algorithmic latency in ms, inf or None)."""
    params = float("nan")
    if (exp / "model_info.json").is_file():  # a zoo teacher (tools/zoo_eval.py): full context
        return json.loads((exp / "model_info.json").read_text())["params_m"], math.inf
    for name in ("valid.loss.ave.pth", "valid.loss.best.pth"):
        if (exp / name).exists():
            state = torch.load(exp / name, map_location="cpu")
            params = sum(v.numel() for k, v in state.items() if not k.startswith("kd_loss.") and v.is_floating_point()
                         and "mean" not in k.rsplit(".", 1)[-1] and "std" not in k.rsplit(".", 1)[-1]) / 1e6
            break
    cfg = yaml.safe_load((exp / "config.yaml").read_text()) if (exp / "config.yaml").exists() else {}
    latency = math.inf
    if cfg.get("encoder") == "kd_chunked" and cfg.get("encoder_conf", {}).get("chunk_size", 0) > 0:
        from kd_core.streaming import algorithmic_latency_ms
        from kd_core.students.frontends import frontend_timing_ms

        from espnet_kd.frontend import KDStreamingFrontend

        fe = KDStreamingFrontend(**cfg.get("frontend_conf", {}))
        shift, lookahead = frontend_timing_ms(fe, fe.fs)
        enc = cfg["encoder_conf"]
        latency = algorithmic_latency_ms(enc["chunk_size"], shift, enc.get("right_context", 0), lookahead)
    elif "contextual_block" in str(cfg.get("encoder")):
        latency = None  # block processing: not computed here
    return params, latency


def audio_seconds(wav_scp: Path) -> float:
    import soundfile

    entries = [line.split(maxsplit=1)[1] for line in wav_scp.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sum(soundfile.info(path).duration for path in entries)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ref_dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("dirs", nargs="*")
    a = p.parse_args()
    rows = ["| model | decoding | test set | params (M) | latency (ms) | utts | WER % | CER % | RTF |",
            "|---|---|---|---|---|---|---|---|---|"]
    durations = {}
    for d in map(Path, a.dirs):
        hyp_file = d / "1best_recog" / "text"
        if not hyp_file.is_file():
            continue
        ref, hyp = read(Path(a.ref_dir) / d.name / "text"), read(hyp_file)
        keys = sorted(ref)
        missing = [k for k in keys if k not in hyp]
        if missing:
            raise SystemExit(f"{hyp_file}: {len(missing)} utterances missing (e.g. {missing[0]}); rerun decoding")
        r, h = [ref[k] for k in keys], [hyp[k] for k in keys]
        params, latency = model_info(d.parent.parent)
        decoding = d.parent.name.replace("decode_", "")
        lat = "n/a" if latency is None else "full context" if math.isinf(latency) else f"{latency:.0f}"
        rtf = "n/a"
        if (d / "decode_seconds").is_file():
            if d.name not in durations:
                durations[d.name] = audio_seconds(Path(a.ref_dir) / d.name / "wav.scp")
            rtf = f"{float((d / 'decode_seconds').read_text()) / durations[d.name]:.3f}"
        rows.append(f"| {d.parent.parent.name} | {decoding} | {d.name} | {params:.2f} | {lat} | {len(keys)} | "
                    f"{100 * jiwer.wer(r, h):.1f} | {100 * jiwer.cer(r, h):.1f} | {rtf} |")
    Path(a.out).write_text("\n".join(rows) + "\n", encoding="utf-8")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
