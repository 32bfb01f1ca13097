"""Student shape presets at about 1/4, 1/8 and 1/12 of the zoo teacher, deep-and-thin and shallow-and-wide.

One definition (:data:`SHAPES`) serves the core factory (:func:`student_preset`), the ESPnet recipe's
preset files (``egs2/kd_synth/asr1/conf/shape_<name>.yaml``) and the fairseq ``+size=<name>`` overrides
(``conf/fairseq/size/<name>.yaml``); ``python -m kd_core.students --write`` writes both kinds of file
from it and ``python -m kd_core.students`` prints each preset's parameters and algorithmic latency
(a test keeps the files equal to what this module writes).

``s12_sew`` is ``s12_deep`` squeezed (SEW): its encoder runs on 80 ms frames (output still 40 ms), about half the
compute at the same size; its chunks are multiples of 2 frames.

Fractions are of :data:`ZOO_TEACHER_PARAMS`, the zoo's ``hubert_mini_ctc`` (HuBERT Base scaled down to
8 x 320 with a 128-channel waveform CNN and a 32-symbol CTC head). Every preset uses the log-Mel (80 bins)
+ Conv2d (16 channels) front-end, 40 ms frames, a conformer with 4 heads and a 4x FFN, and a CTC head.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from .model import StreamingStudent, streaming_student

#: parameters of zoo/hubert_mini_ctc (the CTC model: encoder + head), the reference of the fractions
ZOO_TEACHER_PARAMS = 10_590_000
#: name -> (fraction of the teacher it stays under, d_model, num_layers[, SEW squeeze factor])
SHAPES: Dict[str, tuple] = {
    "s12_deep": (12, 64, 8), "s12_wide": (12, 104, 3), "s12_sew": (12, 64, 8, 2),
    "s8_deep": (8, 72, 10), "s8_wide": (8, 112, 4),
    "s4_deep": (4, 104, 10), "s4_wide": (4, 160, 4),
}
#: encoder keys a preset sets (``squeeze`` only when it squeezes)
ENCODER_KEYS = ("d_model", "num_layers", "num_heads", "ffn_dim", "squeeze")
FRONTEND = dict(n_mels=80, channels=16)


def preset_conf(name: str) -> Dict:
    """``streaming_student`` keyword arguments of preset ``name`` (without ``chunk_size``/``vocab_size``)."""
    if name not in SHAPES:
        from ..errors import KDConfigError

        raise KDConfigError(f"student preset {name!r}: unknown; choose one of {', '.join(SHAPES)}")
    _, d, layers, *squeeze = SHAPES[name]
    conf = dict(frontend="fbank", frontend_conf=dict(FRONTEND), d_model=d, num_layers=layers, num_heads=4, ffn_dim=4 * d)
    return {**conf, "squeeze": squeeze[0]} if squeeze else conf


def student_preset(name: str, **overrides) -> StreamingStudent:
    """The core student of preset ``name``; ``overrides`` (``chunk_size``, ``vocab_size``, ...) go to
    :func:`~kd_core.students.model.streaming_student`."""
    return streaming_student(**{**preset_conf(name), **overrides})


def _render(name: str, conf: Dict, package: str = "") -> str:
    """A preset file: header comment(s) + ``conf`` as YAML (one writer for both toolkits' files)."""
    import yaml

    head = f"# @package {package}\n" if package else ""
    return (head + f"# Student shape {name} (kd_core/students/presets.py; written by python -m kd_core.students --write).\n"
            + yaml.safe_dump(conf, sort_keys=False))


def espnet_yaml(name: str) -> str:
    """The recipe's preset file: the front-end and encoder keys of ``conf/train_student.yaml`` it replaces."""
    c = preset_conf(name)
    return _render(name, {"frontend_conf": {"kind": "fbank", **c["frontend_conf"]},
                          "encoder_conf": {k: c[k] for k in ENCODER_KEYS if k in c}})


def fairseq_yaml(name: str) -> str:
    """The fairseq ``+size=<name>`` override (model fields only)."""
    c = preset_conf(name)
    return _render(name, {"model": {**c["frontend_conf"], **{k: c[k] for k in ENCODER_KEYS if k in c}}},
                   package="_global_")


def preset_files(root: Path) -> Dict[Path, str]:
    """Every preset file under repository ``root`` with its content."""
    out = {}
    for name in SHAPES:
        out[root / "egs2/kd_synth/asr1/conf" / f"shape_{name}.yaml"] = espnet_yaml(name)
        out[root / "conf/fairseq/size" / f"{name}.yaml"] = fairseq_yaml(name)
    return out


def describe(name: str, chunk_size: int = 12, vocab_size: int = 32) -> Dict:
    """Parameters and algorithmic latency of preset ``name`` at ``chunk_size`` frames (40 ms each)."""
    from ..streaming import algorithmic_latency_ms

    model = student_preset(name, chunk_size=chunk_size, vocab_size=vocab_size)
    params = sum(p.numel() for p in model.parameters())
    return {"name": name, "params": params, "fraction_of_teacher": params / ZOO_TEACHER_PARAMS, "squeeze": model.encoder.squeeze,
            "latency_ms": algorithmic_latency_ms(chunk_size, model.frame_shift_ms, 0, model.frontend_lookahead_ms)}
