"""Non-finite KD terms: skip the step, count it, stop after too many in a row.

A teacher target or a KD head that overflows yields ``nan``/``inf`` in the KD term; one such step must not
poison the student's weights or the optimizer's moments, and a run where it keeps happening must stop with a
message instead of training on garbage for days. :class:`NonFiniteGuard` owns the bookkeeping; the adapters
decide what "skip" means in their toolkit (ESPnet: the loss stays non-finite, so ESPnet's trainer skips the
update as it does for a non-finite gradient norm; fairseq: the step's loss is replaced by one with zero
gradient, as fairseq has no skip outside AMP).
"""
from __future__ import annotations

import logging

import torch

from .errors import KDConfigError

log = logging.getLogger(__name__)


class NonFiniteKDError(KDConfigError):
    """Training stopped: too many consecutive steps with a non-finite KD term. A :class:`KDConfigError`, so the
    entry points that print bad input as one line (``asr_kd_train``, the fairseq plugin) print this one too."""


class NonFiniteGuard:
    """Counts training steps whose KD term is not finite.

    Args:
        max_consecutive: raise :class:`NonFiniteKDError` when this many steps in a row are non-finite
            (``0``: never stop).
        option: the option that sets ``max_consecutive``, named in the message.
    """

    def __init__(self, max_consecutive: int = 20, option: str = "kd_max_nonfinite"):
        self.max_consecutive, self.option = int(max_consecutive), option
        self.skipped = 0  # total over the run (this process)
        self.consecutive = 0

    def check(self, kd_term: torch.Tensor) -> bool:
        """``True`` if ``kd_term`` (a scalar) is finite; otherwise counts the step, warns, and raises once
        ``max_consecutive`` steps in a row were non-finite."""
        if bool(torch.isfinite(kd_term).all()):
            self.consecutive = 0
            return True
        self.skipped += 1
        self.consecutive += 1
        log.warning("non-finite KD term (%s): step skipped (%d in a row, %d in total)", float(kd_term), self.consecutive, self.skipped)
        if self.max_consecutive and self.consecutive >= self.max_consecutive:
            raise NonFiniteKDError(
                f"{self.option}={self.max_consecutive}: {self.consecutive} training steps in a row had a non-finite KD term "
                f"({float(kd_term)}); check the teacher's targets (a float16 cache overflows above 65504), lower the "
                f"learning rate, or raise {self.option}")
        return False
