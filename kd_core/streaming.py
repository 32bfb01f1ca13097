"""Streaming helpers: chunk attention masks, ms <-> frames, teacher/student frame-rate ratio, algorithmic latency.

Conventions: boolean masks are ``True`` where attention is *allowed* (the convention of
``torch.nn.functional.scaled_dot_product_attention``). Frames are encoder frames, i.e.
after the front-end's total stride.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch

from .errors import require


def chunk_attention_mask(
    size: int,
    chunk_size: int,
    num_left_chunks: int = -1,
    right_context: int = 0,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """Chunk-wise attention mask of shape ``(size, size)``.

    Frame ``i`` belongs to chunk ``c = i // chunk_size`` and may attend frame ``j`` iff
    ``(c - num_left_chunks) * chunk_size <= j < (c + 1) * chunk_size + right_context``.
    ``chunk_size <= 0`` means full context; ``num_left_chunks < 0`` means unlimited history.

    Args:
        size: number of frames ``T``.
        chunk_size: frames per chunk.
        num_left_chunks: chunks of history each frame sees (``-1``: all).
        right_context: extra look-ahead frames beyond the end of the chunk.
    Returns:
        ``(T, T)`` bool tensor.
    """
    idx = torch.arange(size, device=device)
    if chunk_size <= 0:
        return torch.ones(size, size, dtype=torch.bool, device=device)
    chunk = idx // chunk_size
    end = (chunk + 1) * chunk_size + right_context
    allowed = idx[None, :] < end[:, None]
    if num_left_chunks >= 0:
        start = (chunk - num_left_chunks).clamp(min=0) * chunk_size
        allowed &= idx[None, :] >= start[:, None]
    return allowed


def lengths_to_mask(lengths: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, T)`` bool mask, ``True`` on valid frames."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def ms_to_frames(ms: float, frame_shift_ms: float, option: str = "chunk_ms") -> int:
    """Convert a duration to a whole number of frames of ``frame_shift_ms``.

    Raises :class:`~kd_core.errors.KDConfigError` if ``ms`` is not a multiple of the shift.
    """
    frames = ms / frame_shift_ms
    require(
        ms >= 0 and math.isclose(frames, round(frames), abs_tol=1e-6),
        f"{option}={ms}: must be a non-negative multiple of the encoder frame shift "
        f"({frame_shift_ms:g} ms); use e.g. {round(frames) * frame_shift_ms:g}",
    )
    return int(round(frames))


def frame_rate_ratio(teacher_shift_ms: float, student_shift_ms: float, student_coarser: bool = True) -> int:
    """Integer ratio between the teacher's and the student's frame shifts (how many frames of the finer
    model make one of the coarser), the one check every KD loss makes before matching frame rates.

    ``student_coarser=True`` also requires the student's frames to be at least as long as the teacher's.
    Raises :class:`~kd_core.errors.KDConfigError` naming both shifts otherwise.
    """
    big, small = max(teacher_shift_ms, student_shift_ms), min(teacher_shift_ms, student_shift_ms)
    ratio = big / small
    ok = math.isclose(ratio, round(ratio), abs_tol=1e-6) and (not student_coarser or student_shift_ms >= teacher_shift_ms)
    need = "an integer multiple of the teacher's" if student_coarser else "an integer multiple or fraction of the teacher's"
    require(ok, f"frame shifts teacher={teacher_shift_ms:g} ms, student={student_shift_ms:g} ms: the student's must be "
            f"{need}; change the student's front-end stride")
    return int(round(ratio))


def frames_to_ms(frames: int, frame_shift_ms: float) -> float:
    """Frames of ``frame_shift_ms`` -> milliseconds."""
    return float(frames) * frame_shift_ms


def algorithmic_latency_ms(
    chunk_size: int,
    frame_shift_ms: float,
    right_context: int = 0,
    frontend_lookahead_ms: float = 0.0,
) -> float:
    """Worst-case algorithmic latency of a chunked configuration in milliseconds.

    The first frame of a chunk is emitted only once the whole chunk and its look-ahead
    have arrived: ``latency = (chunk_size + right_context) * frame_shift + frontend
    look-ahead`` (the front-end's receptive field beyond its stride). Full context
    (``chunk_size <= 0``) has unbounded latency: ``math.inf``.
    """
    if chunk_size <= 0:
        return math.inf
    return (chunk_size + right_context) * frame_shift_ms + frontend_lookahead_ms


def measure_frame_shift_ms(num_frames: Callable[[int], int], sample_rate: int, seconds: Tuple[int, int] = (1, 3)) -> float:
    """Frame shift of a model from its output lengths: ``num_frames(n_samples)`` is called for two
    input lengths, and the shift is the extra input time per extra output frame."""
    n1, n2 = (num_frames(s * sample_rate) for s in seconds)
    require(n2 > n1, f"cannot measure the frame shift: {n1} and {n2} output frames for {seconds[0]} s and {seconds[1]} s of input")
    return 1000.0 * (seconds[1] - seconds[0]) / (n2 - n1)
