"""KD losses by name, built from user options plus arguments derived from the teacher and student.

Both adapters build their loss here: ESPnet from ``--kd_loss``/``--kd_loss_conf`` and fairseq
from a criterion's dataclass. Arguments a loss takes that describe the teacher or the student
(dimensions, depths, frame shifts, the chunked encoder, the LF-MMI denominator graph) are filled
in by matching the loss class's signature against :data:`DERIVED_KD_ARGS`; users never set them.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional

from torch import nn

from ..errors import require
from .aux_apc import AuxAPCKDLoss
from .hubert_disc import HubertDiscKDLoss
from .layerwise import LayerwiseKDLoss
from .lfmmi import LFMMIKDLoss
from .rnnt_kd import CollapsedRNNTKDLoss

#: ``--kd_loss`` names (ESPnet) / the loss behind each fairseq KD criterion.
KD_LOSSES: Dict[str, type] = {"layerwise": LayerwiseKDLoss, "aux_apc": AuxAPCKDLoss, "lfmmi": LFMMIKDLoss,
                               "hubert_disc": HubertDiscKDLoss, "rnnt": CollapsedRNNTKDLoss}

#: Loss arguments derived from the teacher and the student (never in a user config).
DERIVED_KD_ARGS = ("teacher_dim", "student_dim", "teacher_layers", "student_layers", "teacher_shift_ms",
                   "student_shift_ms", "encoder", "den_graph", "codebook")


@dataclass
class KDContext:
    """What a KD loss may need to know about the teacher/student pair.

    ``encoder``: the student's :class:`~kd_core.students.encoder.ChunkedEncoder` (``None`` when the
    student is another encoder); ``den_graph``: called only by losses that take a denominator graph;
    ``teacher_vocab``/``student_vocab``: prediction-layer sizes (``None``: no CTC head); ``codebook``: called
    only by losses that take the teacher's HuBERT codebook (:meth:`~kd_core.teachers.base.Teacher.codebook`);
    ``teacher_transducer``/``student_transducer``: both have a prediction network and joiner (RNN-T soft targets).
    """

    teacher_dim: int
    teacher_layers: int
    teacher_shift_ms: float
    student_dim: int
    student_layers: int
    student_shift_ms: float
    encoder: Optional[nn.Module] = None
    den_graph: Optional[Callable[[], object]] = None
    teacher_vocab: Optional[int] = None
    student_vocab: Optional[int] = None
    codebook: Optional[Callable[[], object]] = None
    teacher_transducer: bool = False
    student_transducer: bool = False


def user_options(loss_class: type) -> Dict[str, inspect.Parameter]:
    """The loss's constructor parameters a user sets (signature minus :data:`DERIVED_KD_ARGS`)."""
    return {k: p for k, p in inspect.signature(loss_class).parameters.items() if k not in DERIVED_KD_ARGS}


def teacher_layers_used(loss: nn.Module) -> List[int]:
    """Teacher layers a built KD loss reads (the teacher side of every ``pairs`` in it), sorted; what a
    teacher-target cache must store for it (plus logits when :func:`needs_logits`)."""
    return sorted({t for m in loss.modules() for t, _ in getattr(m, "pairs", [])}
                  | {t for m in loss.modules() for t in getattr(m, "extra_teacher_layers", ())})


def needs_logits(loss: nn.Module) -> bool:
    """Whether ``loss`` also takes ``teacher_logits``/``student_logits`` (prediction-layer KD)."""
    return bool(getattr(loss, "needs_logits", False))


def needs_lattice(loss) -> bool:
    """Whether ``loss`` (a built loss or its class) reads transducer lattices (RNN-T soft targets) instead of hidden states."""
    return bool(getattr(loss, "needs_lattice", False))


def build_kd_loss(name: str, conf: Mapping, ctx: KDContext, option: str = "kd_loss_conf") -> nn.Module:
    """Build loss ``name`` from user options ``conf`` and the pair described by ``ctx``.

    Raises :class:`~kd_core.errors.KDConfigError` (one line naming ``option``) for an unknown loss,
    unknown or derived keys in ``conf``, a missing layer map, a loss that needs the core's chunked
    encoder when the student has another one, or mismatched prediction layers for LF-MMI.
    """
    require(name in KD_LOSSES, f"kd_loss={name!r}: unknown; choose one of {', '.join(KD_LOSSES)}")
    cls = KD_LOSSES[name]
    params = inspect.signature(cls).parameters
    conf = dict(conf)
    derived_given = sorted(set(conf) & set(DERIVED_KD_ARGS))
    require(not derived_given, f"{option} {', '.join(derived_given)}: derived from the teacher and student; remove them")
    unknown = sorted(set(conf) - set(params))
    require(not unknown, f"{option} {', '.join(unknown)}: not an option of kd_loss {name}; it takes "
            f"{', '.join(user_options(cls))}")
    if "layer_map" in params and params["layer_map"].default is inspect.Parameter.empty:
        require(conf.get("layer_map"), f"{option} layer_map is required, e.g. layer_map: '4:2,8:4,12:6' (teacher:student) or 'auto'")
    derived = dict(teacher_dim=ctx.teacher_dim, teacher_layers=ctx.teacher_layers, teacher_shift_ms=ctx.teacher_shift_ms,
                   student_dim=ctx.student_dim, student_layers=ctx.student_layers, student_shift_ms=ctx.student_shift_ms)
    if "encoder" in params:
        require(ctx.encoder is not None, f"kd_loss {name}: needs the core's chunked streaming encoder as the student "
                "(ESPnet: --encoder kd_chunked; fairseq: model kd_streaming_student)")
        derived["encoder"] = ctx.encoder
    if "den_graph" in params:
        require(ctx.teacher_vocab is not None and ctx.teacher_vocab == ctx.student_vocab,
                f"kd_loss {name}: the teacher has {ctx.teacher_vocab} prediction outputs but the student has "
                f"{ctx.student_vocab}; use a CTC teacher trained on the same token list")
        require(ctx.den_graph is not None, f"kd_loss {name}: no denominator graph source (training transcripts) given")
        derived["den_graph"] = ctx.den_graph()
    if needs_lattice(cls):
        require(ctx.teacher_transducer, f"kd_loss {name}: soft RNN-T targets need a transducer teacher (an ESPnet model "
                "trained with --decoder transducer, or a kd_core TransducerStudent); a CTC teacher teaches a transducer "
                "student through hard targets (python -m kd_core.pseudo_label)")
        require(ctx.student_transducer, f"kd_loss {name}: the student has no transducer decoder; use --decoder "
                "transducer (ESPnet) or a kd_core TransducerStudent")
        require(ctx.teacher_vocab == ctx.student_vocab, f"kd_loss {name}: vocabulary mismatch: the teacher's joiner has "
                f"{ctx.teacher_vocab} outputs, the student's {ctx.student_vocab}; soft targets need the same token list")
    if "codebook" in params:
        require(ctx.codebook is not None, f"kd_loss {name}: needs the teacher's HuBERT codebook; use a pre-trained "
                "fairseq HuBERT checkpoint as the teacher")
        derived["codebook"] = ctx.codebook()
    return cls(**{k: v for k, v in derived.items() if k in params}, **conf)


__all__ = ["KD_LOSSES", "DERIVED_KD_ARGS", "KDContext", "build_kd_loss", "needs_lattice", "needs_logits",
           "teacher_layers_used", "user_options"]
