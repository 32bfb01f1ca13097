"""Tolerances for "equal up to float rounding", derived from the computation rather than from one CPU.

Two runs of the same float computation that differ only in summation order (another batch
composition, another kernel, another CPU's vector width) differ by rounding. One reduction of ``width``
terms rounds with a relative error of about ``sqrt(width) * eps`` of the magnitudes it sums; a stack of
``depth`` such layers adds these up (at worst linearly, as every layer re-reads the previous layer's
error). So two results agree to ``margin * eps * sqrt(width) * depth * scale``, with ``scale`` the
magnitude of the values compared (their max) and ``margin = 4`` for correlated errors. For the tiny
teachers (width 128, depth ~10, eps 1.2e-7) that is ~5e-5 of the largest value: a padding leak or a
wrong frame moves values by a large fraction of their scale and still fails.
"""
import math

import torch

MARGIN = 4.0


def float_noise_atol(ref: torch.Tensor, width: int, depth: int) -> float:
    """Absolute tolerance for comparing a recomputation of ``ref`` (any float dtype) at its own scale."""
    eps = torch.finfo(ref.dtype).eps
    return MARGIN * eps * math.sqrt(width) * depth * float(ref.detach().abs().max())


def assert_float_noise_close(got: torch.Tensor, ref: torch.Tensor, width: int, depth: int, what: str = "") -> None:
    """``got == ref`` up to the rounding of ``depth`` layers of ``width``-term reductions (see module doc)."""
    atol = float_noise_atol(ref, width, depth)
    torch.testing.assert_close(got, ref, rtol=0.0, atol=atol, msg=lambda m: f"{what} (float-noise atol {atol:.2e}): {m}")


#: the tiny teachers of tools/make_tiny_teachers.py: reductions at most 128 wide (FFN / linear_units); fairseq:
#: 7 CNN layers + positional conv + 3 x (attention, FFN) + CTC head = 15 deep; ESPnet: fbank + 2 conv2d +
#: 2 conformer blocks x (2 FFN, attention, conv) + head = 12 deep. Rounded up to 16.
TINY_TEACHERS = dict(width=128, depth=16)
