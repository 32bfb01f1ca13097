"""A trained core student as a frozen teacher (two-stage KD: the stage-1 student teaches stage 2).

The student's front-ends are valid convolutions without normalisation over time and its encoder
masks padded keys and frames, so its outputs do not depend on batch padding: it runs batched.
"""
from __future__ import annotations

import torch

from ..students.model import StreamingStudent
from ..students.transducer import is_transducer
from .base import Teacher, TeacherOutput


class StudentTeacher(Teacher):
    """Frozen :class:`~kd_core.students.model.StreamingStudent` or
    :class:`~kd_core.students.transducer.TransducerStudent` (then a transducer teacher: soft RNN-T targets).

    ``hidden``: the student's ``num_layers + 1`` states ``(B, T, d_model)``; ``logits``: its CTC
    head ``(B, T, V)`` or ``None``; frame shift: the front-end's stride (40 ms by default).
    """

    padding_sensitive = False

    def __init__(self, student: StreamingStudent):
        super().__init__()
        self.student = student
        self.num_layers = student.encoder.num_layers
        self.hidden_size = student.encoder.d_model
        self.vocab_size = student.ctc.out_features if student.ctc is not None else None
        self.is_transducer = is_transducer(student)
        if self.is_transducer:
            self.vocab_size, self.blank_id = student.vocab_size, student.blank
        self.frame_shift_ms = student.frame_shift_ms
        self.sample_rate = student.sample_rate
        self.freeze()

    def _forward_batch(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherOutput:
        """``wav (B, S)``, ``lengths (B,)`` -> hidden ``num_layers + 1 x (B, T, D)``, logits ``(B, T, V)``."""
        out = self.student(wav, lengths)
        return TeacherOutput(hidden=out.hidden, lengths=out.lengths, logits=out.logits, frame_shift_ms=self.frame_shift_ms)

    def _transducer_encode(self, wav: torch.Tensor, lengths: torch.Tensor):
        if not self.is_transducer:
            return super()._transducer_encode(wav, lengths)
        out = self.student(wav, lengths)
        return out.hidden[-1], out.lengths

    def _transducer_predict(self, targets: torch.Tensor) -> torch.Tensor:
        return self.student.predict(targets)

    def _transducer_joint(self):
        return self.student.joiner
