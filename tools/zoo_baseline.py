"""The zoo's quality bar: the from-scratch student the CTC teacher must beat, trained on the teacher's own labelled
set with the fairseq plugin (``conf/fairseq/kd_streaming.yaml`` + ``+method=scratch +size=s12_deep``, full context:
the strongest student of at most 1/12 of the teacher's parameters), and the plot of both learning curves.

    python -m tools.build_zoo scratch_s12      # resumable, like the teachers (exp/zoo/runs/scratch_s12)

Model cards read the result from ``exp/zoo/runs/scratch_s12/train.log`` (the same fairseq json log as the teachers').
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

#: the baseline run: fairseq-hydra-train overrides on top of conf/fairseq/kd_streaming.yaml
SCRATCH_OVERRIDES = ["+method=scratch", "+size=s12_deep", "model.chunk_size=0", "common.cpu=true", "common.log_format=json",
                     "optimization.max_epoch=0", "optimization.max_update=12000"]  # ~50 passes over the labelled set


def valid_curve(log: Path) -> List[Dict[str, float]]:
    """``[{"update", "uer", "wer"}]`` from fairseq's ``[valid]`` json lines (teachers and students alike)."""
    from tools.zoo_cards import learning_curve

    return [{k: float(v) for k, v in r.items()} for r in learning_curve(log, ["uer", "wer"]) if r["wer"] != "?"]


def bar_lines(teacher_log: Path, scratch_log: Path, teacher_params: float) -> List[str]:
    """Markdown: the teacher's best valid WER/UER vs the scratch student's, and whether the 25 % bar is met."""
    import torch

    t = valid_curve(teacher_log)
    s = valid_curve(scratch_log) if scratch_log.is_file() else []
    if not t or not s:
        return [f"No scratch baseline yet (`python -m tools.build_zoo scratch_s12` writes {scratch_log})."]
    ckpt = scratch_log.parent / "checkpoint_last.pt"
    s_params = sum(v.numel() for v in torch.load(ckpt, map_location="cpu", weights_only=False)["model"].values()) / 1e6
    bt, bs = min(t, key=lambda r: r["wer"]), min(s, key=lambda r: r["wer"])
    rel = 100 * (bs["wer"] - bt["wer"]) / bs["wer"]
    return ["| model (valid split of the labelled set) | parameters | updates | best valid WER % | its UER % |",
            "|---|---|---|---|---|",
            f"| hubert_mini_ctc (teacher) | {teacher_params:.2f}M | {int(t[-1]['update'])} | {bt['wer']:.1f} | {bt['uer']:.1f} |",
            f"| s12_deep Fbank student from scratch, full context | {s_params:.2f}M (1/{teacher_params / s_params:.1f}) | "
            f"{int(s[-1]['update'])} | {bs['wer']:.1f} | {bs['uer']:.1f} |", "",
            f"Teacher vs scratch: {rel:+.1f} % relative WER (the bar: at least +25 %, on both test sets): "
            f"**{'met' if rel >= 25 else 'not met'}** on valid."]


def plot_curves(teacher_log: Path, scratch_log: Optional[Path], out: Path) -> None:
    """Valid UER and WER against updates for the teacher and (if present) the scratch baseline -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kd_core.atomic import atomic_write

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, log, style in (("hubert_mini_ctc (<= 20 s of audio per update)", teacher_log, "-o"),
                             ("s12 student from scratch (<= 40 s per update)", scratch_log, "-s")):
        rows = valid_curve(log) if log is not None and log.is_file() else []
        for ax, key in zip(axes, ("uer", "wer")):
            ax.plot([r["update"] for r in rows], [r[key] for r in rows], style, ms=3, label=name)
    for ax, key in zip(axes, ("UER", "WER")):
        ax.set_xlabel("update (fairseq)")
        ax.set_ylabel(f"valid {key} %")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
