"""Teacher + student + KD losses (+ CTC) -> one training loss with a shared normalisation.

The one owner of the KD objective: :func:`kd_term` (any loss of :func:`~.losses.registry.build_kd_loss`
-> its per-frame mean and stats) is called by :func:`kd_objective` (``+ CTC``; the fairseq criteria,
the bench and :class:`Distiller`) and by the ESPnet model (``+ ESPnet's CTC/attention loss``).
Every term is a ``(sum, denominator)`` pair; :func:`kd_objective` combines their means with the
configured weights and returns ``(loss_sum, denom, stats)`` with ``denom`` = batch size, so
ESPnet (``loss = sum / denom``, ``weight = denom``) and fairseq (``loss = sum``,
``sample_size = denom``) normalise identically.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .errors import require
from .losses.registry import KDContext, build_kd_loss, needs_lattice, needs_logits
from .students.model import StreamingStudent, StudentOutput
from .students.transducer import is_transducer
from .teachers.base import Teacher, TeacherOutput


def ctc_loss_sum(logits: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor,
                 labelled: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """CTC summed over utterances. ``logits (B, T, V)``, ``targets (B, U)`` (blank = 0) -> ``(sum, B)``.

    ``labelled (B,)`` bool: only these utterances count (semi-supervised KD: the others are unlabelled audio that
    only the KD term reads); the denominator is their number, ``0`` when none is labelled (the sum is then ``0``).
    """
    if labelled is not None:
        if not bool(labelled.any()):
            return logits.sum() * 0.0, torch.tensor(0.0)
        logits, lengths, targets, target_lengths = logits[labelled], lengths[labelled], targets[labelled], target_lengths[labelled]
    lp = logits.log_softmax(-1).transpose(0, 1).float()
    loss = F.ctc_loss(lp, targets, lengths, target_lengths, blank=0, reduction="sum", zero_infinity=True)
    return loss, torch.tensor(float(logits.size(0)))


def kd_context(teacher, student: StreamingStudent, den_graph: Optional[Callable[[], object]] = None,
               codebook_option: str = "teacher_path") -> KDContext:
    """The :class:`KDContext` of a teacher and a core student, for :func:`build_kd_loss`.

    ``teacher``: anything with the :class:`Teacher` attributes (a loaded teacher, a
    :class:`~kd_core.cache.CachedTeacher`, a :class:`~kd_core.teachers.student_teacher.StudentTeacher`).
    ``den_graph``: called only by losses that take a denominator graph (LF-MMI); ``codebook_option``: the
    option named when a loss needs a HuBERT codebook the teacher lacks.
    """
    transducer = is_transducer(student)  # a TransducerStudent: its prediction layer is the joiner
    vocab = student.vocab_size if transducer else (student.ctc.out_features if student.ctc is not None else None)
    return KDContext(teacher_dim=teacher.hidden_size, teacher_layers=teacher.num_layers,
                     teacher_shift_ms=teacher.frame_shift_ms, student_dim=student.encoder.d_model,
                     student_layers=student.encoder.num_layers, student_shift_ms=student.frame_shift_ms,
                     encoder=student.encoder, den_graph=den_graph, teacher_vocab=teacher.vocab_size, student_vocab=vocab,
                     codebook=teacher_codebook(teacher, codebook_option),
                     teacher_transducer=bool(getattr(teacher, "is_transducer", False)), student_transducer=transducer)


def teacher_codebook(teacher, option: str) -> Callable[[], object]:
    """``() -> HubertCodebook`` of ``teacher`` (a cached teacher: of the model behind it), refused with one line
    naming ``option`` when the teacher has none (fine-tuned checkpoints, other model families, a cache without
    its model)."""
    return lambda: teacher.codebook(option)


def check_weights(prefix: str, **weights: float) -> None:
    """One line for a negative or non-finite loss weight, named as the caller's option (``prefix`` + name)."""
    for name, w in weights.items():
        require(math.isfinite(float(w)) and float(w) >= 0, f"{prefix}{name}={w}: loss weights must be finite and >= 0 "
                "(0 switches the term off)")


class Distiller(nn.Module):
    """KD from a frozen teacher into a core student with any registered KD loss, plus optional CTC.

    Args:
        teacher: frozen :class:`Teacher` (or a cached one); ``None`` when targets are always passed to
            :meth:`forward`, in which case ``context`` describes the teacher.
        student: :class:`StreamingStudent`.
        kd_loss: name in :data:`~kd_core.losses.registry.KD_LOSSES` (``layerwise``, ``aux_apc``, ``lfmmi``).
        kd_weight, ctc_weight: weights of the mean KD and mean CTC terms (``kd_weight=0``: no KD loss is built).
        rnnt_weight: a :class:`~kd_core.students.transducer.TransducerStudent`'s transducer loss (mean per utterance);
            with ``kd_loss="rnnt"`` and a transducer teacher the KD term is the collapsed-lattice KL
            (:func:`transducer_objective`).
        den_graph: LF-MMI denominator graph source (``() -> Graph``), e.g. ``lambda: cached_den_graph(seqs, vocab)``.
        context: overrides the :class:`KDContext` derived from ``teacher`` and ``student``.
        **loss_conf: the loss's user options (``layer_map``, ``l1_weight``, ``apc_shift``, ...; defaults from the loss).
    """

    def __init__(self, teacher: Optional[Teacher], student: StreamingStudent, kd_loss: str = "layerwise",
                 kd_weight: float = 1.0, ctc_weight: float = 0.0, den_graph: Optional[Callable[[], object]] = None,
                 context: Optional[KDContext] = None, rnnt_weight: float = 0.0, **loss_conf):
        super().__init__()
        check_weights("", kd_weight=kd_weight, ctc_weight=ctc_weight, rnnt_weight=rnnt_weight)
        require(rnnt_weight == 0 or is_transducer(student), "rnnt_weight>0 but the student is not a TransducerStudent")
        self.teacher = teacher
        require(teacher is None or teacher.sample_rate == student.sample_rate,
                f"sample rates differ: teacher {getattr(teacher, 'sample_rate', None)} Hz, student {student.sample_rate} Hz; "
                "set the student's sample_rate to the teacher's and resample the data")
        require(ctc_weight == 0 or student.ctc is not None, "ctc_weight>0 but the student has no CTC head; set vocab_size")
        require(teacher is not None or context is not None or not kd_weight,
                "Distiller: no teacher; pass context=KDContext(...) describing the teacher whose targets you will give")
        self.student = student
        self.kd_weight, self.ctc_weight, self.rnnt_weight = kd_weight, ctc_weight, rnnt_weight
        self.kd = None
        if kd_weight:
            self.kd = build_kd_loss(kd_loss, loss_conf, context or kd_context(teacher, student, den_graph), option="loss_conf")

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        """Student + heads only: the teacher is never saved."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor, targets: Optional[torch.Tensor] = None,
                target_lengths: Optional[torch.Tensor] = None, teacher_out: Optional[TeacherOutput] = None):
        """``wav (B, S)``, ``lengths (B,)``, optional CTC ``targets (B, U)`` -> ``(loss_sum, denom, stats)``."""
        out = self.student(wav, lengths)
        if is_transducer(self.student):
            lattice = None
            if self.kd_weight and needs_lattice(self.kd):
                require(self.teacher is not None and targets is not None, "kd_loss rnnt: needs the teacher and the reference "
                        "targets (the lattice is over the reference); for unlabelled audio, pseudo-label it first")
                lattice = self.teacher.transducer_lattice(wav, lengths, targets, target_lengths)
            elif self.kd_weight:
                teacher_out = teacher_out or self.teacher(wav, lengths)
            return transducer_objective(self.kd, self.student, out, lattice, teacher_out, self.kd_weight, self.rnnt_weight,
                                        self.ctc_weight, targets, target_lengths)
        if self.kd_weight and teacher_out is None:
            require(self.teacher is not None, "no teacher and no precomputed teacher targets given")
            teacher_out = self.teacher(wav, lengths)
        return kd_objective(self.kd, out, teacher_out, self.kd_weight, self.ctc_weight, targets, target_lengths)


def kd_term(kd_loss: nn.Module, teacher: TeacherOutput, student_hidden: Sequence[Optional[torch.Tensor]],
            student_lengths: torch.Tensor, student_logits: Optional[torch.Tensor] = None,
            ) -> Tuple[torch.Tensor, Dict[str, float]]:
    """The KD loss's mean over its denominator (e.g. valid student frames) and its stats.

    ``student_hidden``: ``(B, T, D)`` per layer (index 0: encoder input, last: encoder output);
    ``student_logits (B, T, V)``: passed, with the teacher's, to prediction-layer losses (:func:`needs_logits`).
    """
    kd_sum, kd_den, stats = kd_term_parts(kd_loss, teacher, student_hidden, student_lengths, student_logits)
    return kd_sum / kd_den.clamp(min=1), stats


def kd_term_parts(kd_loss: nn.Module, teacher: TeacherOutput, student_hidden: Sequence[Optional[torch.Tensor]],
                  student_lengths: torch.Tensor, student_logits: Optional[torch.Tensor] = None,
                  ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
    """:func:`kd_term` before the division: ``(sum, denominator, stats)``."""
    require(not needs_lattice(kd_loss), "kd_loss rnnt: reads transducer lattices, not hidden states; the student must be a "
            "transducer (ESPnet --decoder transducer, kd_core TransducerStudent)")
    logits = dict(teacher_logits=teacher.logits, student_logits=student_logits) if needs_logits(kd_loss) else {}
    return kd_loss(teacher.hidden, teacher.lengths, student_hidden, student_lengths, **logits)


def global_batch_mean(total: torch.Tensor, den: torch.Tensor, weight: int) -> torch.Tensor:
    """``total / den`` over the *global* batch when ``torch.distributed`` runs several ranks, for trainers that
    combine the ranks' losses weighted by ``weight`` (ESPnet: ``sum_r loss_r * w_r / sum_r w_r``).

    Each rank returns ``total_r / D * W / w_r`` (``D``, ``W``: the denominators and weights summed over ranks, one
    ``all_reduce`` of two numbers), so the combined loss is ``sum_r total_r / D``: a frame-averaged KD term does not
    depend on how the global batch is split over ranks. One process: ``total / den``.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return total / den.clamp(min=1)
    sums = torch.stack([den.detach().float().reshape(()), den.new_tensor(float(weight), dtype=torch.float32)])
    dist.all_reduce(sums)
    return total / sums[0].clamp(min=1) * (sums[1] / weight)


def kd_objective(kd_loss: Optional[nn.Module], student: StudentOutput, teacher: Optional[TeacherOutput], kd_weight: float,
                 ctc_weight: float, targets: Optional[torch.Tensor] = None, target_lengths: Optional[torch.Tensor] = None,
                 labelled: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
    """``kd_weight * KD (`kd_term`) + ctc_weight * CTC (mean over utterances)``, returned as
    ``(mean * B, B, stats)``: the per-utterance sum that ESPnet divides by its weight and fairseq by
    ``sample_size``. CTC counts only when ``targets (B, U)`` are given, and only over the ``labelled (B,)``
    utterances when that mask is given (the KD term reads every utterance). ``stats``: the loss's own
    terms, ``kd``, ``ctc`` and ``loss``.
    """
    b = student.lengths.numel()
    loss, stats = student.hidden[-1].new_zeros(()), {}
    if kd_weight:
        require(kd_loss is not None and teacher is not None, "kd_weight > 0 but no KD loss or teacher targets")
        kd_mean, stats = kd_term(kd_loss, teacher, student.hidden, student.lengths, student.logits)
        loss = kd_weight * kd_mean
        stats["kd"] = kd_mean.item()
    if ctc_weight and targets is not None:
        require(student.logits is not None, "ctc_weight > 0 but the student has no CTC head; set vocab_size")
        c_sum, c_den = ctc_loss_sum(student.logits, student.lengths, targets, target_lengths, labelled)
        loss = loss + ctc_weight * c_sum / c_den.clamp(min=1)  # no labelled utterance: a 0 sum that keeps the graph
        if c_den > 0:
            stats["ctc"] = (c_sum / c_den).item()
    stats["loss"] = loss.item()
    return loss * b, torch.tensor(float(b)), stats


def transducer_objective(kd_loss: Optional[nn.Module], student, out: StudentOutput, teacher_lattice, teacher: Optional[TeacherOutput],
                         kd_weight: float, rnnt_weight: float, ctc_weight: float = 0.0,
                         targets: Optional[torch.Tensor] = None, target_lengths: Optional[torch.Tensor] = None,
                         labelled: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
    """:func:`kd_objective` for a :class:`~kd_core.students.transducer.TransducerStudent`: ``kd_weight * KD +
    rnnt_weight * transducer loss (mean per utterance) + ctc_weight * CTC``, as ``(mean * B, B, stats)``; the
    transducer and CTC terms read only the ``labelled (B,)`` utterances when that mask is given (the others'
    ``targets`` are then a teacher's 1-best: the reference of their soft-target lattice).

    KD: with ``teacher_lattice`` (a :class:`~kd_core.losses.rnnt_kd.TransducerLattice` of a transducer teacher on
    ``targets``) the collapsed-lattice KL per valid node; otherwise ``kd_loss`` on hidden states (``teacher``), as for
    CTC students. Hard targets (pseudo-labels) are just ``targets`` with ``kd_weight = 0``.
    """
    from .losses.rnnt_kd import TransducerLattice

    b = out.lengths.numel()
    hidden_kd = teacher_lattice is None  # a hidden-state KD loss (kd_objective's), or the lattice KL below
    total, _, stats = kd_objective(kd_loss if hidden_kd else None, out, teacher, kd_weight if hidden_kd else 0.0,
                                   ctc_weight, targets, target_lengths, labelled)
    loss = total / b
    if teacher_lattice is not None and kd_weight:
        mine = TransducerLattice(student.joiner, out.hidden[-1], out.lengths, student.predict(targets))
        kd_sum, kd_den, kd_stats = kd_loss.lattice_kd(teacher_lattice, mine, targets, target_lengths)
        kd_mean = kd_sum / kd_den.clamp(min=1)
        loss = loss + kd_weight * kd_mean
        stats.update(kd_stats, kd=kd_mean.item())
    rows = torch.ones(b, dtype=torch.bool) if labelled is None else labelled.cpu()
    if rnnt_weight and targets is not None and bool(rows.any()):
        r_sum, r_den, r_stats = student.loss(out.hidden[-1][rows], out.lengths[rows], targets[rows], target_lengths[rows])
        loss = loss + rnnt_weight * r_sum / r_den
        stats.update(r_stats)
    stats["loss"] = loss.item()
    return loss * b, torch.tensor(float(b)), stats
