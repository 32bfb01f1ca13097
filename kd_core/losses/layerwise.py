"""Layer-to-layer distillation loss (DistilHuBERT-style heads, masked, frame-rate aware).

For each mapped pair (teacher layer ``t``, student layer ``s``) a head ``h_s`` projects the
student hidden state to the teacher's dimension and, per valid frame ``n``::

    l(n) = w_l1 * mean_d |h_s(x_n) - y_n| + w_l2 * mean_d (h_s(x_n) - y_n)^2
           - w_cos * log(sigmoid(cos(h_s(x_n), y_n)))

The loss returns ``(sum over pairs and valid frames, number of valid frames, stats)``, so
``sum / denom`` is the sum over layers of the per-frame average, and padded frames never
count. Teacher and student frame rates may differ by an integer factor: teacher frames are
average-pooled (``"pool"``) or concatenated (``"stack"``) onto the student rate, or student
frames are pooled when the student is the faster one.
"""
from __future__ import annotations

import math

from typing import Dict, List, Mapping, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import KDConfigError, require
from ..streaming import frame_rate_ratio, lengths_to_mask

LayerMapSpec = Union[str, Mapping[int, int], Sequence[Sequence[int]]]


def auto_layer_map(teacher_layers: int, student_layers: int) -> List[Tuple[int, int]]:
    """``layer_map="auto"``: student layers at 1/3, 2/3 and 3/3 of its depth (DistilHuBERT predicts
    teacher layers 4, 8, 12 of 12), each paired with the teacher layer at the same relative depth."""
    pairs: List[Tuple[int, int]] = []
    for k in (1, 2, 3):
        s = max(1, round(k * student_layers / 3))
        t = max(1, round(s * teacher_layers / student_layers))
        if (t, s) not in pairs:
            pairs.append((t, s))
    return pairs


def parse_layer_map(spec: LayerMapSpec, teacher_layers: int, student_layers: int, option: str = "layer_map") -> List[Tuple[int, int]]:
    """Parse ``"4:2,8:4,12:6"``, ``{4: 2}``, ``[[4, 2]]`` or ``"auto"`` into validated (teacher, student) pairs.

    Layer ``0`` is the input to the first layer (after the front-end); layer ``L`` the last.
    """
    if spec == "auto":
        return auto_layer_map(teacher_layers, student_layers)
    if isinstance(spec, (int, float)):  # YAML 1.1 reads an unquoted 1:7 as the base-60 number 67
        raise KDConfigError(f"{option}={spec!r}: got a number; quote the map ('1:7,2:8') or give pairs [[1, 7], [2, 8]]")
    if isinstance(spec, str):
        try:
            pairs = [tuple(int(v) for v in item.split(":")) for item in spec.replace(" ", "").split(",") if item]
        except ValueError:
            raise KDConfigError(f"{option}={spec!r}: expected 'teacher:student,...' e.g. '4:2,8:4,12:6'") from None
    elif isinstance(spec, Mapping):
        pairs = [(int(k), int(v)) for k, v in spec.items()]
    else:
        try:
            pairs = [tuple(int(v) for v in p) for p in spec]
        except (TypeError, ValueError):
            raise KDConfigError(f"{option}={spec!r}: expected 'teacher:student,...' or pairs [[4, 2], [8, 4]]") from None
    require(len(pairs) > 0 and all(len(p) == 2 for p in pairs), f"{option}={spec!r}: expected 'teacher:student,...' pairs")
    for t, s in pairs:
        require(0 <= t <= teacher_layers, f"{option}: teacher layer {t} out of range; the teacher has layers 0..{teacher_layers}")
        require(0 <= s <= student_layers, f"{option}: student layer {s} out of range; the student has layers 0..{student_layers}")
    return pairs


def normalize_target(hidden: torch.Tensor, target_norm: bool) -> torch.Tensor:
    """``target_norm``: each teacher frame ``(..., D)`` layer-normalised without affine parameters (as data2vec's
    targets). A pre-LN teacher's residual stream grows with depth (hundreds per squared dimension), so its raw
    hidden states make hidden-layer losses dwarf the CTC loss; per-frame, so padding never changes a frame."""
    return F.layer_norm(hidden.float(), hidden.shape[-1:]).to(hidden.dtype) if target_norm else hidden


def match_frame_rate(teacher: torch.Tensor, t_len: torch.Tensor, ratio: int, mode: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Bring teacher frames ``(B, T, D)`` to a ``ratio``-times coarser rate.

    ``"pool"``: average of ``ratio`` frames -> ``(B, T//ratio, D)``; ``"stack"``: concatenation
    -> ``(B, T//ratio, ratio*D)``; ``"prob"``: ``teacher`` holds log-probabilities, the result is the log of
    their mean probability (a CTC spike keeps ``1/ratio`` of its mass, where averaging log-probabilities
    would bury it under the neighbouring blank frames). Only complete groups of valid frames are kept.
    """
    if ratio == 1:
        return teacher, t_len
    b, t, d = teacher.shape
    t2 = t // ratio
    x = teacher[:, : t2 * ratio].reshape(b, t2, ratio, d)
    if mode == "prob":
        x = x.logsumexp(2) - math.log(ratio)
    else:
        x = x.mean(2) if mode == "pool" else x.reshape(b, t2, ratio * d)
    return x, torch.div(t_len, ratio, rounding_mode="floor")


def masked_layer_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, l1: float, l2: float, cos: float) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Sum over valid frames of the per-frame loss. ``pred/target (B, T, D)``, ``mask (B, T)``."""
    m = mask.to(pred.dtype)
    diff = pred - target
    total = pred.new_zeros(())
    stats = {}
    n = m.sum().clamp(min=1)
    if l1:
        v = (diff.abs().mean(-1) * m).sum()
        total = total + l1 * v
        stats["l1"] = (v / n).item()
    if l2:
        v = (diff.pow(2).mean(-1) * m).sum()
        total = total + l2 * v
        stats["l2"] = (v / n).item()
    if cos:
        c = F.cosine_similarity(pred, target, dim=-1)
        v = (-F.logsigmoid(c) * m).sum()
        total = total + cos * v
        stats["cos"] = ((c * m).sum() / n).item()
    return total, stats


class LayerwiseKDLoss(nn.Module):
    """Masked layer-to-layer KD with per-layer projection heads.

    Args:
        teacher_dim, student_dim: hidden sizes.
        layer_map: teacher->student pairs (see :func:`parse_layer_map`).
        teacher_layers, student_layers: depths, for validation.
        teacher_shift_ms, student_shift_ms: frame shifts; their ratio must be an integer.
        l1_weight, l2_weight, cos_weight: term weights (DistilHuBERT: 1, 0, 1).
        heads: ``"linear"`` (one projection per pair) or ``"none"`` (dims must match).
        rate_mode: ``"pool"`` or ``"stack"`` for a coarser student.
        target_norm: layer-normalise every teacher frame first (:func:`normalize_target`).
    Forward:
        ``teacher_hidden``/``student_hidden``: lists indexed by layer of ``(B, T, D)``;
        lengths ``(B,)`` each -> ``(loss_sum, denom, stats)``.
    """

    def __init__(self, teacher_dim: int, student_dim: int, layer_map: LayerMapSpec, teacher_layers: int, student_layers: int,
                 teacher_shift_ms: float = 20.0, student_shift_ms: float = 40.0, l1_weight: float = 1.0,
                 l2_weight: float = 0.0, cos_weight: float = 1.0, heads: str = "linear", rate_mode: str = "pool",
                 target_norm: bool = False):
        super().__init__()
        self.target_norm = target_norm
        self.pairs = parse_layer_map(layer_map, teacher_layers, student_layers)
        require(heads in ("linear", "none"), f"heads={heads!r}: use 'linear' or 'none'")
        require(rate_mode in ("pool", "stack"), f"rate_mode={rate_mode!r}: use 'pool' or 'stack'")
        self.ratio = frame_rate_ratio(teacher_shift_ms, student_shift_ms, student_coarser=False)
        self.student_coarser = student_shift_ms > teacher_shift_ms
        self.rate_mode = rate_mode
        target_dim = teacher_dim * (self.ratio if (self.student_coarser and rate_mode == "stack") else 1)
        if heads == "none":
            require(student_dim == target_dim, f"heads=none: student dim {student_dim} != teacher target dim {target_dim}; "
                    "use heads=linear to add projection heads")
            self.heads = nn.ModuleList(nn.Identity() for _ in self.pairs)
        else:
            self.heads = nn.ModuleList(nn.Linear(student_dim, target_dim) for _ in self.pairs)
        self.w = (l1_weight, l2_weight, cos_weight)
        require(any(self.w), "l1_weight, l2_weight and cos_weight are all 0: enable at least one term")

    def forward(self, teacher_hidden: Sequence[torch.Tensor], teacher_lengths: torch.Tensor,
                student_hidden: Sequence[torch.Tensor], student_lengths: torch.Tensor):
        total, denom, stats = None, None, {}
        for k, ((t, s), head) in enumerate(zip(self.pairs, self.heads)):
            tgt, t_len = normalize_target(teacher_hidden[t], self.target_norm), teacher_lengths
            pred, s_len = head(student_hidden[s]), student_lengths
            if self.student_coarser:
                tgt, t_len = match_frame_rate(tgt, t_len, self.ratio, self.rate_mode)
            else:
                pred, s_len = match_frame_rate(pred, s_len, self.ratio, "pool")
            n = min(tgt.size(1), pred.size(1))
            lens = torch.minimum(t_len, s_len).clamp(max=n)
            mask = lengths_to_mask(lens, n)
            loss, st = masked_layer_loss(pred[:, :n], tgt[:, :n].to(pred.dtype), mask, *self.w)
            total = loss if total is None else total + loss
            denom = lens.sum() if denom is None else denom
            stats.update({f"kd_{name}_t{t}s{s}": v for name, v in st.items()})
        return total, denom, stats
