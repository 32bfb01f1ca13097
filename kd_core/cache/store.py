"""On-disk store of teacher targets: sharded, memory-mapped, keyed by the audio itself.

Layout of one cache (``<root>/<identity>/``, ``identity`` = a hash of the teacher fingerprint,
the stored layers, the dtype and whether logits are stored, so another teacher or selection
can never open it)::

    meta.json                 what the cache holds: teacher fingerprint, layers, dtype, logits,
                              teacher shape (num_layers, hidden_size, vocab_size, frame shift)
    manifest.json             written by the builder only: expected utterances, complete or not
    shards/<name>/hidden.npy  (sum_T, K, D) float16/float32: the K stored layers of all the
                              shard's utterances, frames concatenated (one contiguous block per
                              utterance, so a lookup reads one region per utterance)
    shards/<name>/logits.npy  (sum_T, V) when logits are stored
    shards/<name>/index.json  {"keys": [...], "offsets": [...], "frames": [...]}

A shard is written into ``shards/.tmp-*`` and renamed in one step when all its files are on
disk, so readers only ever see whole shards and a killed writer leaves at most a temporary
directory (removed by the next build). Several processes may fill one cache at once: shard
names are unique and readers pick up new shards by listing ``shards/``.

An utterance's key is a hash of its valid samples as float32 bytes, so ESPnet (no utterance
ids in the model's forward) and fairseq find the same entries, and changed audio misses.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import socket
import uuid
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..atomic import atomic_write_text
from ..errors import KDConfigError, require
from ..teachers.base import TeacherOutput
from .keys import TEACHER_INFO_KEYS, check_layers, parse_layers, utterance_keys

logger = logging.getLogger(__name__)

FORMAT = 1
DTYPES = {"float16": np.float16, "float32": np.float32}


def _fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flush_at_exit(ref: "weakref.ref[TeacherTargetCache]") -> None:
    """Targets buffered by an online fill are written when the process ends normally."""
    cache = ref()
    if cache is not None and cache._buffer:
        try:
            cache.flush()
        except Exception:  # noqa: BLE001 - never turn a clean exit into a crash; the targets are recomputed
            logger.exception("teacher cache %s: could not write the last buffered targets", cache.path)


Entry = Tuple[np.ndarray, Optional[np.ndarray]]  # hidden (T, K, D), logits (T, V) or None


class TeacherTargetCache:
    """Teacher targets of many utterances on disk, looked up by audio content.

    Args:
        root: folder holding caches; this one is ``root/<identity>`` (:attr:`path`).
        fingerprint: :func:`teacher_fingerprint` of the teacher.
        layers: teacher layer indices to store (``0`` = input of the first layer), e.g. ``"4,8,12"``.
        dtype: ``"float16"`` (half the disk, targets rounded to fp16) or ``"float32"`` (exact).
        store_logits: store the prediction-layer logits ``(T, V)`` too (CTC teachers only).
        teacher_info: :func:`describe_teacher` of the teacher when known; checked against the
            cache's ``meta.json`` and used to validate ``layers``.
        shard_size: utterances per shard written by :meth:`add` (the builder chooses its own).
        max_buffer_mb: :meth:`add` also writes a shard once this much is buffered in memory.
        max_open_shards: memory-mapped shards kept open at once (least recently used closed).

    Raises:
        KDConfigError: bad ``dtype``/``layers``, layers outside the teacher, logits requested
            from a teacher without them, or a ``meta.json`` that does not describe this cache.
    """

    def __init__(self, root: Union[str, os.PathLike], fingerprint: str, layers: Union[str, Sequence[int]],
                 dtype: str = "float16", store_logits: bool = True, teacher_info: Optional[Mapping] = None,
                 shard_size: int = 256, max_buffer_mb: float = 512.0, max_open_shards: int = 64):
        require(dtype in DTYPES, f"dtype={dtype!r}: choose float16 or float32")
        require(int(shard_size) > 0, f"shard_size={shard_size}: must be a positive number of utterances")
        self.layers = parse_layers(layers)
        self.dtype, self.store_logits = dtype, bool(store_logits)
        self.identity = {"format": FORMAT, "teacher": str(fingerprint), "layers": list(self.layers), "dtype": dtype,
                         "logits": self.store_logits}
        digest = hashlib.blake2b(json.dumps(self.identity, sort_keys=True).encode(), digest_size=10).hexdigest()
        self.path = Path(root) / digest
        self.shard_size, self.max_open_shards = int(shard_size), max(1, int(max_open_shards))
        self.max_buffer_bytes = float(max_buffer_mb) * 2**20
        self.teacher_info: Optional[Dict[str, object]] = None
        self._where: Dict[str, Tuple[str, int, int]] = {}  # key -> (shard, offset, frames)
        self._shards: set = set()
        self._open: "OrderedDict[str, Tuple[np.ndarray, Optional[np.ndarray]]]" = OrderedDict()
        self._buffer: "OrderedDict[str, Entry]" = OrderedDict()
        self._read_meta()
        if teacher_info is not None:
            self.set_teacher_info(teacher_info)
        self.refresh()
        atexit.register(_flush_at_exit, weakref.ref(self))

    @classmethod
    def open(cls, path: Union[str, os.PathLike], **kwargs) -> "TeacherTargetCache":
        """Open an existing cache directory (``<root>/<identity>``) from its ``meta.json``."""
        meta_path = Path(path) / "meta.json"
        require(meta_path.is_file(), f"{path}: not a teacher cache (no meta.json); pass a directory made by "
                "'python -m kd_core.cache build'")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        cache = cls(Path(path).parent, meta["teacher"], meta["layers"], meta["dtype"], meta["logits"], **kwargs)
        require(cache.path.resolve() == Path(path).resolve(), f"{meta_path}: its contents do not hash to the folder name "
                f"(edited or renamed); delete {path} and build the cache again")
        return cache

    # ---- metadata ------------------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    def _read_meta(self) -> None:
        if not self.meta_path.is_file():
            return
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except ValueError:
            raise KDConfigError(f"{self.meta_path}: not valid JSON; delete {self.path} and build the cache again") from None
        diff = [k for k, v in self.identity.items() if meta.get(k) != v]
        require(not diff, f"{self.meta_path}: describes another cache ({', '.join(f'{k}={meta.get(k)!r}' for k in diff)}); "
                f"it was edited or copied; delete {self.path} and build the cache again")
        self.teacher_info = meta.get("teacher_info")

    def set_teacher_info(self, info: Mapping) -> None:
        """Record (or check) the teacher's shape; validates :attr:`layers` and ``store_logits`` against it."""
        info = {k: info.get(k) for k in TEACHER_INFO_KEYS}
        check_layers(self.layers, int(info["num_layers"]))
        require(not self.store_logits or info["vocab_size"] is not None,
                "store_logits=True but the teacher has no logits (not a CTC model); store hidden layers only (no --logits)")
        if self.teacher_info is not None:
            old = self.teacher_info
            for k in TEACHER_INFO_KEYS:
                require(info[k] is None or old.get(k) is None or info[k] == old[k], f"{self.meta_path}: the teacher's {k} is "
                        f"{info[k]} but the cache says {old.get(k)}; delete {self.path} and build the cache again")
            if all(info[k] is None or old.get(k) is not None for k in TEACHER_INFO_KEYS):
                return
            info = {k: old.get(k) if old.get(k) is not None else info[k] for k in TEACHER_INFO_KEYS}
        self.teacher_info = dict(info)
        atomic_write_text(self.meta_path, json.dumps({**self.identity, "teacher_info": self.teacher_info}, indent=1) + "\n")

    # ---- build state ---------------------------------------------------------------------
    @property
    def manifest(self) -> Dict[str, object]:
        """The builder's ``manifest.json`` (``{}`` if the cache was never built, only filled online)."""
        p = self.path / "manifest.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}

    def write_manifest(self, manifest: Mapping) -> None:
        atomic_write_text(self.path / "manifest.json", json.dumps(dict(manifest), indent=1) + "\n")

    @property
    def complete(self) -> bool:
        """``True`` only if a build ran to its end and all its shards are still there."""
        m = self.manifest
        if m.get("complete") is not True:
            return False
        prefix = f"b-{m.get('list_digest')}-"
        return sum(1 for n in self.shard_names() if n.startswith(prefix)) == m.get("num_shards")

    @property
    def expected(self) -> Optional[int]:
        """Utterances in the last build's list (``None`` without a build)."""
        return self.manifest.get("expected")

    def status(self) -> Dict[str, object]:
        """Summary for humans and scripts: what is stored, how many utterances, complete or not."""
        self.refresh()
        m = self.manifest
        tmp = [p.name for p in (self.path / "shards").glob(".tmp-*")] if (self.path / "shards").is_dir() else []
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file()) if self.path.is_dir() else 0
        return {"path": str(self.path), **self.identity, "teacher_info": self.teacher_info, "cached": len(self),
                "expected": m.get("expected"), "source": m.get("source"), "complete": self.complete,
                "shards": len(self._shards), "temporary_dirs": len(tmp), "bytes": size}

    # ---- reading -------------------------------------------------------------------------
    def shard_names(self) -> List[str]:
        """Names of the complete shards on disk (temporary ones excluded)."""
        d = self.path / "shards"
        return sorted(n for n in os.listdir(d) if not n.startswith(".")) if d.is_dir() else []

    def refresh(self) -> int:
        """Index shards written since the last call (by this or another process); returns how many."""
        new = [n for n in self.shard_names() if n not in self._shards]
        for name in new:
            idx_path = self.path / "shards" / name / "index.json"
            try:
                idx = json.loads(idx_path.read_text(encoding="utf-8"))
                rows = list(zip(idx["keys"], idx["offsets"], idx["frames"]))
            except (OSError, ValueError, KeyError, TypeError):
                raise KDConfigError(f"{idx_path}: missing or unreadable shard index; delete {idx_path.parent} and re-run "
                                    "the cache build") from None
            for key, off, n in rows:
                self._where.setdefault(key, (name, int(off), int(n)))
            self._shards.add(name)
        return len(new)

    def __len__(self) -> int:
        return len(self._where.keys() | self._buffer.keys()) if self._buffer else len(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._buffer or key in self._where

    def missing(self, keys: Sequence[str]) -> List[int]:
        """Indices of ``keys`` not in the cache (shards of other processes included)."""
        out = [i for i, k in enumerate(keys) if k not in self]
        if out and self.refresh():
            out = [i for i in out if keys[i] not in self]
        return out

    def _shard_arrays(self, name: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        if name in self._open:
            self._open.move_to_end(name)
            return self._open[name]
        d = self.path / "shards" / name
        try:
            hidden = np.load(d / "hidden.npy", mmap_mode="r")
            logits = np.load(d / "logits.npy", mmap_mode="r") if self.store_logits else None
        except (OSError, ValueError) as e:
            raise KDConfigError(f"{d}: unreadable shard ({type(e).__name__}); delete it and re-run the cache build") from None
        frames = json.loads((d / "index.json").read_text(encoding="utf-8"))["frames"]
        ok = hidden.ndim == 3 and hidden.shape[:2] == (sum(frames), len(self.layers)) and hidden.dtype == DTYPES[self.dtype]
        ok = ok and (logits is None or (logits.ndim == 2 and logits.shape[0] == hidden.shape[0]))
        require(ok, f"{d}: arrays do not match index.json ({hidden.shape} for {sum(frames)} frames x {len(self.layers)} layers); "
                "delete it and re-run the cache build")
        self._open[name] = (hidden, logits)
        while len(self._open) > self.max_open_shards:
            self._open.popitem(last=False)
        return hidden, logits

    def entry(self, key: str) -> Entry:
        """Stored targets of one utterance: hidden ``(T, K, D)`` (K = :attr:`layers`), logits ``(T, V)`` or ``None``
        (memory-mapped views in the storage dtype). Raises ``KeyError`` when absent."""
        if key in self._buffer:
            return self._buffer[key]
        name, off, n = self._where[key]
        hidden, logits = self._shard_arrays(name)
        return hidden[off : off + n], (None if logits is None else logits[off : off + n])

    def fetch(self, keys: Sequence[str], device: Union[str, torch.device] = "cpu") -> TeacherOutput:
        """Targets of cached utterances as a padded float32 batch.

        Returns:
            :class:`TeacherOutput`: ``hidden`` has ``num_layers + 1`` entries, ``(B, T_max, D)`` at the
            stored layers and ``None`` elsewhere; ``lengths (B,)``; ``logits (B, T_max, V)`` or ``None``.
            Padded frames are zero.
        """
        require(self.teacher_info is not None, f"{self.path}: the cache holds no targets yet; build it first")
        entries = [self.entry(k) for k in keys]
        frames = [h.shape[0] for h, _ in entries]
        t_max, k_layers, dim = max(frames), len(self.layers), entries[0][0].shape[2]
        buf = np.zeros((k_layers, len(keys), t_max, dim), np.float32)
        logits = np.zeros((len(keys), t_max, entries[0][1].shape[1]), np.float32) if self.store_logits else None
        for b, (h, lg) in enumerate(entries):
            buf[:, b, : h.shape[0]] = np.moveaxis(h, 1, 0)
            if logits is not None:
                logits[b, : lg.shape[0]] = lg
        hidden: List[Optional[torch.Tensor]] = [None] * (int(self.teacher_info["num_layers"]) + 1)
        for i, layer in enumerate(self.layers):
            hidden[layer] = torch.from_numpy(buf[i]).to(device)
        return TeacherOutput(hidden=hidden, lengths=torch.tensor(frames, device=device),
                             logits=None if logits is None else torch.from_numpy(logits).to(device),
                             frame_shift_ms=float(self.teacher_info["frame_shift_ms"]))

    def lookup(self, wav: torch.Tensor, lengths: torch.Tensor) -> Optional[TeacherOutput]:
        """Cached targets of a batch, or ``None`` unless every utterance is cached.

        Args:
            wav: ``(B, S)`` zero-padded waveforms, exactly the samples the teacher would get.
            lengths: ``(B,)`` valid samples.
        Returns:
            :class:`TeacherOutput` as :meth:`fetch`, on ``wav.device``, or ``None``.
        """
        keys = utterance_keys(wav, lengths)
        return None if self.missing(keys) else self.fetch(keys, wav.device)

    # ---- writing -------------------------------------------------------------------------
    def add(self, wav: torch.Tensor, lengths: torch.Tensor, out: TeacherOutput) -> List[str]:
        """Store the teacher's targets ``out`` of the batch ``wav (B, S)``, ``lengths (B,)``; returns the keys."""
        keys = utterance_keys(wav, lengths)
        self.add_output(keys, out)
        return keys

    def add_output(self, keys: Sequence[str], out: TeacherOutput) -> None:
        """Buffer row ``b`` of ``out`` under ``keys[b]`` (converted to the storage dtype); a shard is
        written whenever :attr:`shard_size` utterances or ``max_buffer_mb`` are buffered (or on :meth:`flush`)."""
        if self.teacher_info is None:
            self.set_teacher_info({"num_layers": len(out.hidden) - 1, "hidden_size": out.hidden[self.layers[0]].size(-1),
                                   "vocab_size": None if out.logits is None else out.logits.size(-1),
                                   "frame_shift_ms": out.frame_shift_ms})
        for b, entry in enumerate(self.rows(out)):
            if keys[b] not in self:
                self._buffer[keys[b]] = entry
        nbytes = sum(h.nbytes + (0 if lg is None else lg.nbytes) for h, lg in self._buffer.values())
        if len(self._buffer) >= self.shard_size or nbytes >= self.max_buffer_bytes:
            self.flush()

    def rows(self, out: TeacherOutput) -> List[Entry]:
        """``out`` -> per utterance hidden ``(T, K, D)`` and logits ``(T, V)`` in the storage dtype."""
        require(len(out.hidden) == int(self.teacher_info["num_layers"]) + 1,
                f"{self.path}: teacher output has {len(out.hidden) - 1} layers, the cache's teacher {self.teacher_info['num_layers']}")
        require(not self.store_logits or out.logits is not None, "store_logits=True but the teacher gave no logits; "
                "store hidden layers only (no --logits)")
        dtype = torch.float16 if self.dtype == "float16" else torch.float32
        hidden = torch.stack([out.hidden[i] for i in self.layers], 2).detach()  # (B, T, K, D)
        cast = hidden.to("cpu", dtype)
        logits = out.logits.detach().to("cpu", dtype) if self.store_logits else None
        if dtype == torch.float16:
            finite = bool(torch.isfinite(cast).all()) and (logits is None or bool(torch.isfinite(logits).all()))
            require(finite or not bool(torch.isfinite(hidden).all()), f"{self.path}: teacher targets exceed the float16 "
                    "range (|x| > 65504); use dtype float32")
        cast, logits = cast.numpy(), None if logits is None else logits.numpy()
        return [(cast[b, :n].copy(), None if logits is None else logits[b, :n].copy()) for b, n in enumerate(out.lengths.tolist())]

    def flush(self) -> Optional[str]:
        """Write buffered targets as one shard; returns its name (``None`` if nothing was buffered)."""
        if not self._buffer:
            return None
        name = f"f-{uuid.uuid4().hex[:16]}"
        self.write_shard(name, list(self._buffer.keys()), list(self._buffer.values()))
        self._buffer.clear()
        return name

    def write_shard(self, name: str, keys: Sequence[str], entries: Sequence[Entry]) -> bool:
        """Write one shard atomically (temporary dir, then rename). ``False`` if ``name`` already exists."""
        shards = self.path / "shards"
        shards.mkdir(parents=True, exist_ok=True)
        final = shards / name
        if final.exists():
            return False
        tmp = shards / f".tmp-{name}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            frames = [int(h.shape[0]) for h, _ in entries]
            offsets = np.concatenate([[0], np.cumsum(frames)[:-1]]).astype(int).tolist() if frames else []
            dim = int(self.teacher_info["hidden_size"]) if self.teacher_info else 0
            dt = DTYPES[self.dtype]
            hidden = np.concatenate([h for h, _ in entries]) if entries else np.zeros((0, len(self.layers), dim), dt)
            _save_npy(tmp / "hidden.npy", hidden)
            if self.store_logits:
                vocab = int(self.teacher_info.get("vocab_size") or 0) if self.teacher_info else 0
                _save_npy(tmp / "logits.npy", np.concatenate([lg for _, lg in entries]) if entries else np.zeros((0, vocab), dt))
            index = json.dumps({"keys": list(keys), "offsets": offsets, "frames": frames})
            with open(tmp / "index.json", "w", encoding="utf-8") as f:
                f.write(index)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.rename(tmp, final)
            except OSError:  # a concurrent writer finished the same shard first
                if final.is_dir():
                    return False
                raise
            _fsync_dir(shards)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.refresh()
        return True

    def clean_temporary(self) -> int:
        """Remove temporary shard dirs left by killed writers on this host (live writers' are kept)."""
        removed, host = 0, socket.gethostname()
        for p in (self.path / "shards").glob(".tmp-*") if (self.path / "shards").is_dir() else []:
            prefix = p.name.rpartition("-")[0]  # .tmp-<name>-<host>-<pid>-<random>
            prefix, _, pid = prefix.rpartition("-")
            if prefix.endswith(f"-{host}") and pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)
                removed += 1
        return removed
