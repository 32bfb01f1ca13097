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
from .students.model import StreamingStudent
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
        b = wav.size(0)
        loss, stats = out.hidden[-1].new_zeros(()), {}
        if self.kd_weight:
            if teacher_out is None:
                require(self.teacher is not None, "no teacher and no precomputed teacher targets given")
                teacher_out = self.teacher(wav, lengths)
            kd_sum, kd_den, stats = self.kd(teacher_out.hidden, teacher_out.lengths, out.hidden, out.lengths)
            loss = self.kd_weight * kd_sum / kd_den.clamp(min=1)
        if self.ctc_weight and targets is not None:
            c_sum, c_den = ctc_loss_sum(out.logits, out.lengths, targets, target_lengths)
            loss = loss + self.ctc_weight * c_sum / c_den
            stats["ctc"] = (c_sum / c_den).item()
        stats["loss"] = loss.item()
        return loss * b, torch.tensor(float(b)), stats
