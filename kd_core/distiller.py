"""Teacher + student + KD losses (+ CTC) -> one training loss with a shared normalisation.

Every term is a ``(sum, denominator)`` pair; the distiller combines their means with the
configured weights and returns ``(loss_sum, denom, stats)`` with ``denom`` = batch size, so
ESPnet (``loss = sum / denom``, ``weight = denom``) and fairseq (``loss = sum``,
``sample_size = denom``) normalise identically.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .errors import require
from .losses.layerwise import LayerMapSpec, LayerwiseKDLoss
from .losses.registry import needs_logits
from .students.model import StreamingStudent, StudentOutput
from .teachers.base import Teacher, TeacherOutput


def ctc_loss_sum(logits: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """CTC summed over utterances. ``logits (B, T, V)``, ``targets (B, U)`` (blank = 0) -> ``(sum, B)``."""
    lp = logits.log_softmax(-1).transpose(0, 1).float()
    loss = F.ctc_loss(lp, targets, lengths, target_lengths, blank=0, reduction="sum", zero_infinity=True)
    return loss, torch.tensor(float(logits.size(0)))


class Distiller(nn.Module):
    """Hidden-layer KD from a frozen teacher into a student, plus optional CTC.

    Args:
        teacher: frozen :class:`Teacher` (or ``None`` when targets come precomputed).
        student: :class:`StreamingStudent`.
        layer_map: teacher->student layer pairs (e.g. ``"4:2,8:4,12:6"``).
        kd_weight, ctc_weight: weights of the mean KD and mean CTC terms.
        teacher_dim, teacher_layers, teacher_shift_ms: needed when ``teacher`` is ``None``.
        **loss_conf: :class:`LayerwiseKDLoss` options (``l1_weight``, ``cos_weight``, ``heads``, ...).
    """

    def __init__(self, teacher: Optional[Teacher], student: StreamingStudent, layer_map: LayerMapSpec,
                 kd_weight: float = 1.0, ctc_weight: float = 0.0, teacher_dim: Optional[int] = None,
                 teacher_layers: Optional[int] = None, teacher_shift_ms: Optional[float] = None, **loss_conf):
        super().__init__()
        self.teacher = teacher
        require(teacher is None or teacher.sample_rate == student.sample_rate,
                f"sample rates differ: teacher {getattr(teacher, 'sample_rate', None)} Hz, student {student.sample_rate} Hz; "
                "set the student's sample_rate to the teacher's and resample the data")
        require(ctc_weight == 0 or student.ctc is not None, "ctc_weight>0 but the student has no CTC head; set vocab_size")
        self.student = student
        self.kd_weight, self.ctc_weight = kd_weight, ctc_weight
        self.kd = LayerwiseKDLoss(
            teacher_dim=teacher_dim or teacher.hidden_size,
            student_dim=student.encoder.d_model,
            layer_map=layer_map,
            teacher_layers=teacher_layers if teacher_layers is not None else teacher.num_layers,
            student_layers=student.encoder.num_layers,
            teacher_shift_ms=teacher_shift_ms or teacher.frame_shift_ms,
            student_shift_ms=student.frame_shift_ms,
            **loss_conf,
        )

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        """Student + heads only: the teacher is never saved."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor, targets: Optional[torch.Tensor] = None,
                target_lengths: Optional[torch.Tensor] = None, teacher_out: Optional[TeacherOutput] = None):
        """``wav (B, S)``, ``lengths (B,)``, optional CTC ``targets (B, U)`` -> ``(loss_sum, denom, stats)``."""
        out = self.student(wav, lengths)
        if self.kd_weight and teacher_out is None:
            require(self.teacher is not None, "no teacher and no precomputed teacher targets given")
            teacher_out = self.teacher(wav, lengths)
        return kd_objective(self.kd, out, teacher_out, self.kd_weight, self.ctc_weight, targets, target_lengths)


#: per-loss totals that ``kd_objective`` reports once, as ``kd``
SUMMARY_STATS = ("kd_layer", "kd_aux_apc")


def kd_objective(kd_loss: Optional[nn.Module], student: StudentOutput, teacher: Optional[TeacherOutput], kd_weight: float,
                 ctc_weight: float, targets: Optional[torch.Tensor] = None, target_lengths: Optional[torch.Tensor] = None,
                 ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
    """``kd_weight * KD (mean over the loss's denominator, e.g. valid frames) + ctc_weight * CTC (mean
    over utterances)``, returned as ``(mean * B, B, stats)``: the per-utterance sum that ESPnet divides
    by its weight and fairseq by ``sample_size``. CTC counts only when ``targets (B, U)`` are given;
    prediction-layer losses (``needs_logits``) also get both models' logits ``(B, T, V)``.
    """
    b = student.lengths.numel()
    loss, stats = student.hidden[-1].new_zeros(()), {}
    if kd_weight:
        require(kd_loss is not None and teacher is not None, "kd_weight > 0 but no KD loss or teacher targets")
        logits = dict(teacher_logits=teacher.logits, student_logits=student.logits) if needs_logits(kd_loss) else {}
        kd_sum, kd_den, stats = kd_loss(teacher.hidden, teacher.lengths, student.hidden, student.lengths, **logits)
        loss = kd_weight * kd_sum / kd_den.clamp(min=1)
        stats = {k: v for k, v in stats.items() if k not in SUMMARY_STATS}
        stats["kd"] = (kd_sum / kd_den.clamp(min=1)).item()
    if ctc_weight and targets is not None:
        require(student.logits is not None, "ctc_weight > 0 but the student has no CTC head; set vocab_size")
        c_sum, c_den = ctc_loss_sum(student.logits, student.lengths, targets, target_lengths)
        loss = loss + ctc_weight * c_sum / c_den
        stats["ctc"] = (c_sum / c_den).item()
    stats["loss"] = loss.item()
    return loss * b, torch.tensor(float(b)), stats
