"""The zoo's quality bar: the from-scratch student the CTC teacher must beat, trained on the teacher's own labelled
set with the fairseq plugin (``conf/fairseq/kd_streaming.yaml`` + ``+method=scratch +size=s12_deep``, full context:
the strongest student of at most 1/12 of the teacher's parameters), and the plot of the learning curves.

    python -m tools.build_zoo scratch_s12      # resumable, like the teachers (exp/zoo/runs/scratch_s12)

Its valid curve, size and test-set WERs go into ``zoo/hubert_mini_ctc/history.json`` (``baseline``), beside the
teacher's runs, so the card and the plot survive machines (``exp/`` does not).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

#: the baseline run: fairseq-hydra-train overrides on top of conf/fairseq/kd_streaming.yaml
SCRATCH_OVERRIDES = ["+method=scratch", "+size=s12_deep", "model.chunk_size=0", "common.cpu=true", "common.log_format=json",
                     "optimization.max_epoch=0", "optimization.max_update=12000"]  # ~50 passes over the labelled set


def valid_curve(log: Path) -> List[Dict[str, float]]:
    """``[{"update", "uer", "wer"}]`` from fairseq's ``[valid]`` json lines (teachers and students alike)."""
    from tools.zoo_cards import learning_curve

    return [{k: float(v) for k, v in r.items()} for r in learning_curve(log, ["uer", "wer"]) if r["wer"] != "?"]


def score_test_sets(checkpoint: Path, data: Path, splits=("test_synth", "test_fsdd")) -> Dict[str, Dict]:
    """Greedy-CTC WER of a ``kd_streaming_student`` checkpoint on the teacher's test sets (``fairseq_kd.decode``)."""
    from fairseq_kd.decode import decode_split, load_checkpoint, word_error_rate

    model, task = load_checkpoint(str(checkpoint), str(data))
    out = {}
    for split in splits:
        res = decode_split(model, task, split)
        out[split] = {"utterances": len(res["hyps"]), "wer": round(word_error_rate(res["refs"], res["hyps"]), 2)}
    return out


def record_baseline(log: Path, checkpoint: Path, test: Dict[str, Dict]) -> Dict:
    """Put the baseline run (fairseq ``log``, the selected ``checkpoint`` for the size, its ``test`` WERs) into
    ``zoo/hubert_mini_ctc/history.json``."""
    import torch

    from tools.zoo_cards import read_history, train_hours, write_history

    params = sum(v.numel() for v in torch.load(checkpoint, map_location="cpu", weights_only=False)["model"].values())
    curve = valid_curve(log)
    return write_history("hubert_mini_ctc", {**read_history("hubert_mini_ctc"), "baseline": {
        "run": "scratch_s12", "params": params, "updates": int(curve[-1]["update"]) if curve else 0,
        "cpu_hours": round(train_hours(log), 2), "test": test, "curve": curve}})


def bar_lines(hist: Dict, teacher_params: float) -> List[str]:
    """Markdown: the shipped teacher (last run of ``hist``) against the scratch baseline, best valid WER/UER and WER on
    each test set, and whether the bar (at least 25 % relative better on both test sets) is met."""
    if not hist["runs"] or not hist.get("baseline", {}).get("curve"):
        return ["No scratch baseline yet (`python -m tools.build_zoo scratch_s12` records it)."]
    t, s = hist["runs"][-1], hist["baseline"]
    s_params = s["params"] / 1e6
    bt, bs = min(t["curve"], key=lambda r: r["wer"]), min(s["curve"], key=lambda r: r["wer"])
    sets = [k for k in s["test"] if k in t["test"]]
    rel = {k: 100 * (s["test"][k]["wer"] - t["test"][k]["wer"]) / s["test"][k]["wer"] for k in sets}
    met = bool(sets) and all(r >= 25 for r in rel.values())
    head = " | ".join(f"{k} WER %" for k in sets)
    return [f"| model | parameters | updates | best valid WER % (its UER) | {head} |", "|---" * (4 + len(sets)) + "|",
            f"| hubert_mini_ctc (teacher) | {teacher_params:.2f}M | {int(t['curve'][-1]['update'])} | {bt['wer']:.1f} "
            f"({bt['uer']:.1f}) | " + " | ".join(f"{t['test'][k]['wer']:.1f}" for k in sets) + " |",
            f"| s12_deep Fbank student from scratch, full context | {s_params:.2f}M (1/{teacher_params / s_params:.1f}) | "
            f"{int(s['curve'][-1]['update'])} | {bs['wer']:.1f} ({bs['uer']:.1f}) | "
            + " | ".join(f"{s['test'][k]['wer']:.1f}" for k in sets) + " |", "",
            "Teacher vs scratch, relative WER (the bar: at least +25 % on both test sets): "
            + ", ".join(f"{k} {r:+.1f} %" for k, r in rel.items()) + f": **{'met' if met else 'not met'}**."]


def plot_curves(hist: Dict, out: Path) -> None:
    """Valid UER and WER against updates: every fine-tuning run of ``hist`` and (if recorded) the scratch baseline -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kd_core.atomic import atomic_write

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    series = [(f"hubert_mini_ctc from hubert_mini at {r['pretrain_updates']} updates (<= 20 s of audio per update)",
               r["curve"], "-o") for r in hist["runs"]]
    if hist.get("baseline"):
        series.append(("s12 student from scratch (<= 40 s per update)", hist["baseline"]["curve"], "-s"))
    for name, rows, style in series:
        for ax, key in zip(axes, ("uer", "wer")):
            ax.plot([r["update"] for r in rows], [r[key] for r in rows], style, ms=3, label=name)
    for ax, key in zip(axes, ("UER", "WER")):
        ax.set_xlabel("update (fairseq)")
        ax.set_ylabel(f"valid {key} %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
