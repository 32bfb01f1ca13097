"""Identities: of a teacher (checkpoint bytes, or weights), of an utterance (its samples), of a layer selection."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from ..errors import KDConfigError, require
from ..teachers.base import Teacher

# Loader options that only say where things are unpacked, never what the teacher computes.
LOCATION_ONLY_CONF = ("cachedir", "trust_pickle")  # where it is unpacked; whether it may be unpickled: not what it computes
TEACHER_INFO_KEYS = ("num_layers", "hidden_size", "vocab_size", "frame_shift_ms", "sample_rate")
_FILE_HASHES: Dict[Tuple[str, int, int], str] = {}


def file_sha256(path: str) -> str:
    """sha256 of a file, streamed; memoised per process on (path, size, mtime)."""
    st = os.stat(path)
    memo = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _FILE_HASHES[memo] = h.hexdigest()
    return _FILE_HASHES[memo]


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes) of ``module``."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def teacher_fingerprint(teacher_type: str, teacher_path: str, teacher: Optional[Teacher] = None, **teacher_conf) -> str:
    """Identity of a teacher's targets, as a readable string (stored in ``meta.json``).

    Files (fairseq/torchaudio ``.pt``, ESPnet zip): ``sha256`` of the bytes, so a retrained or
    re-downloaded checkpoint with other weights gets another cache, wherever it lives. An
    ESPnet zoo name: the name. A torchaudio factory name (random weights): a hash of the loaded
    ``teacher``'s weights, which must then be given. Loader options (``teacher_conf``, e.g.
    ``normalize_waveform``) are part of the identity, except ``cachedir``.

    Raises:
        KDConfigError: missing file, a directory, or a factory name without ``teacher``.
    """
    path = str(teacher_path)
    require(not os.path.isdir(path), f"teacher_path={path}: is a directory; pass the checkpoint file the cache is for")
    if os.path.isfile(path):
        content = "sha256:" + file_sha256(path)
    else:
        require(os.path.sep not in path and not path.endswith((".pt", ".pth", ".zip", ".tar.gz", ".tgz")),
                f"teacher_path={path}: file not found; pass the teacher checkpoint the cache is for")
        if teacher_type == "torchaudio":
            require(teacher is not None, f"teacher_path={path!r}: a torchaudio factory has random weights; pass the "
                    "loaded teacher (teacher=...) so its weights are hashed, or save it as a .pt checkpoint")
            content = "weights:" + weights_hash(teacher)
        else:
            content = "name:" + path
    conf = {k: v for k, v in sorted(teacher_conf.items()) if k not in LOCATION_ONLY_CONF and v is not None
            and not (k == "compute_dtype" and v == "float32")}  # the default, whether spelled out or not
    return f"{teacher_type}|{content}" + (f"|{json.dumps(conf, sort_keys=True, default=str)}" if conf else "")


def describe_teacher(teacher: Teacher) -> Dict[str, object]:
    """The shape of a teacher's targets: ``num_layers``, ``hidden_size``, ``vocab_size``, ``frame_shift_ms``, ``sample_rate``."""
    return {"num_layers": int(teacher.num_layers), "hidden_size": int(teacher.hidden_size),
            "vocab_size": None if teacher.vocab_size is None else int(teacher.vocab_size),
            "frame_shift_ms": float(teacher.frame_shift_ms), "sample_rate": int(teacher.sample_rate)}


def parse_layers(layers: Union[str, Iterable[int]], option: str = "layers") -> Tuple[int, ...]:
    """``"4,8,12"`` or ``[12, 4, 8]`` -> ``(4, 8, 12)`` (sorted, unique, non-negative)."""
    try:
        items = [int(x) for x in (layers.replace(" ", "").split(",") if isinstance(layers, str) else layers)]
    except (TypeError, ValueError):
        raise KDConfigError(f"{option}={layers!r}: expected teacher layer indices such as 4,8,12") from None
    require(len(items) > 0 and min(items) >= 0, f"{option}={layers!r}: expected non-negative teacher layer indices such as 4,8,12")
    return tuple(sorted(set(items)))


def check_layers(layers: Sequence[int], num_layers: int, option: str = "layers") -> None:
    """Every layer must be in ``0..num_layers`` (0 = the input of the first teacher layer)."""
    bad = [i for i in layers if not 0 <= i <= num_layers]
    require(not bad, f"{option}={','.join(map(str, layers))}: layer {bad[0] if bad else ''} is outside the teacher's "
            f"0..{num_layers} (0 = input of the first layer); pick layers in 0..{num_layers}")


def utterance_keys(wav: torch.Tensor, lengths: torch.Tensor) -> List[str]:
    """``wav (B, S)``, ``lengths (B,)`` -> ``B`` keys: blake2b (128 bit) of each utterance's valid
    samples as float32 bytes; padding and batch composition do not change a key."""
    w = wav.detach().to("cpu", torch.float32).contiguous().numpy()
    return [hashlib.blake2b(w[b, :n], digest_size=16).hexdigest() for b, n in enumerate(lengths.tolist())]
