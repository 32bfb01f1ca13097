"""The core's one pure-torch training loop (the toolkits' trainers replace it inside ESPnet and fairseq).

:func:`train_loop` trains any module whose training step is a function of a batch, e.g. a
:class:`~kd_core.distiller.Distiller`::

    dist = Distiller(teacher, student, kd_loss="layerwise", layer_map="4:2,8:4", ctc_weight=1.0)

    def step(batch):
        loss_sum, denom, stats = dist(*batch)      # wav (B, S), lengths (B,), targets (B, U), target lengths (B,)
        return loss_sum / denom, stats

    train_loop(dist, step, batches, lr=2e-3, warmup=100, ckpt=Path("exp/kd.partial.pt"), steps=1000)

AdamW + linear warm-up + cosine decay, over a number of steps or a wall-clock budget, with a partial
checkpoint (model, optimiser, step, elapsed time, curve) written atomically every ``ckpt_every_s``
seconds: a killed run re-run with the same arguments resumes where it stopped and replays the batch order.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
from torch import nn

from .atomic import atomic_torch_save
from .errors import require

log = logging.getLogger(__name__)


def lr_factor(step: int, warmup: int, progress: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay over ``progress`` in [0, 1] (floor 2 %)."""
    return min(1.0, (step + 1) / max(1, warmup)) * max(0.02, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def train_loop(module: nn.Module, step_fn: Callable[[object], Tuple[torch.Tensor, Dict[str, float]]],
               batches: Iterator[object], lr: float, warmup: int, ckpt: Path, steps: Optional[int] = None,
               budget_s: Optional[float] = None, ckpt_every_s: float = 120.0, desc: str = "train",
               log_every: int = 50, clip_norm: float = 5.0) -> Dict:
    """Train ``module``'s trainable parameters; ``step_fn(batch) -> (loss, stats)`` with ``batch = next(batches)``.

    Stops after ``steps`` steps or ``budget_s`` seconds of training, whichever comes first; the LR
    schedule follows ``steps`` when given without a budget, else the budget. A step whose loss is not
    finite is skipped (no update) but counted. ``ckpt`` holds the partial state; a re-run resumes from
    it (``batches`` must yield the same sequence: the first ``step`` batches are drawn and dropped).
    Returns ``{"steps", "seconds", "curve"}`` (curve: per-step stats rounded to 4 digits).
    """
    require(steps is not None or budget_s is not None, "train_loop: give steps or budget_s (or both)")
    ckpt = Path(ckpt)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=1e-2)
    state = {"step": 0, "elapsed": 0.0, "curve": []}
    if ckpt.exists():
        ck = torch.load(ckpt, weights_only=False)
        module.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        log.info("%s: resuming at step %d (%.0f s trained)", desc, state["step"], state["elapsed"])
    for _ in range(state["step"]):
        next(batches)
    module.train()
    t0, last_ckpt = time.perf_counter() - state["elapsed"], time.perf_counter()
    while True:
        elapsed = time.perf_counter() - t0
        if (steps is not None and state["step"] >= steps) or (budget_s is not None and elapsed >= budget_s):
            break
        progress = state["step"] / steps if steps is not None and budget_s is None else elapsed / budget_s
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor(state["step"], warmup, progress)
        loss, stats = step_fn(next(batches))
        opt.zero_grad()
        if torch.isfinite(loss):
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
            opt.step()
        state["step"] += 1
        state["curve"].append({k: round(float(v), 4) for k, v in stats.items()})
        if state["step"] % log_every == 0:
            log.info("%s step %d (%.0f s): %s lr %.2e", desc, state["step"], elapsed,
                     " ".join(f"{k} {v:.3g}" for k, v in stats.items()), opt.param_groups[0]["lr"])
        if time.perf_counter() - last_ckpt > ckpt_every_s:
            state["elapsed"] = time.perf_counter() - t0
            atomic_torch_save({"model": module.state_dict(), "opt": opt.state_dict(), "state": state}, ckpt)
            last_ckpt = time.perf_counter()
    state["elapsed"] = time.perf_counter() - t0
    return {"steps": state["step"], "seconds": round(state["elapsed"], 1), "curve": state["curve"]}
