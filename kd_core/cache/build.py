"""Build a teacher-target cache over a data list, resumably (:func:`build_cache`); find caches and
format their status. The command line (``python -m kd_core.cache build|status``) is :mod:`.cli`.

The list is cut into shards of ``shard_size`` utterances in list order; shard ``i`` is named
after the list (paths, sizes, modification times) and ``i``. A re-run with the same list skips
the shards already on disk without reading their audio and redoes the one a kill interrupted;
utterances cached by any earlier run or online fill are not recomputed. ``manifest.json`` says
``complete: true`` only after the last shard, so a killed build is reported incomplete.
A shard is held in memory until it is written:
about ``shard_size`` x frames x layers x hidden size x 2 bytes (float16).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

from ..data import load_audio, pad_batch
from ..errors import KDConfigError, require
from ..teachers.base import Teacher
from .keys import describe_teacher, utterance_keys
from .store import TeacherTargetCache

logger = logging.getLogger(__name__)


def _list_digest(utts: Sequence[Tuple[str, str]], shard_size: int, sample_rate: int) -> str:
    """Hash of the list (ids, absolute paths, sizes, modification times) and the shard size; checks every
    file exists and has the teacher's sample rate before any teacher work."""
    import soundfile as sf

    h = hashlib.blake2b(f"{shard_size}|".encode(), digest_size=6)
    for uid, path in utts:
        require(os.path.isfile(path), f"{path}: audio file not found; fix the path in wav.scp / the manifest")
        try:
            sr = sf.info(path).samplerate
        except Exception as e:  # noqa: BLE001 - soundfile raises several types for corrupt data
            raise KDConfigError(f"{path}: cannot read audio ({type(e).__name__}); re-encode it as 16-bit PCM wav") from None
        require(sr == sample_rate, f"{path}: sample rate {sr} Hz, expected {sample_rate} Hz; resample (e.g. sox in.wav -r "
                f"{sample_rate} out.wav)")
        st = os.stat(path)
        h.update(f"{uid}\t{os.path.abspath(path)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def build_cache(root: Union[str, os.PathLike], teacher: Teacher, fingerprint: str, layers: Union[str, Sequence[int]],
                utterances: Sequence[Tuple[str, str]], dtype: str = "float16", store_logits: bool = False,
                shard_size: int = 256, batch_size: int = 8, source: str = "", progress: bool = True,
                on_shard: Optional[Callable[[int, str], None]] = None) -> TeacherTargetCache:
    """Compute and store the teacher's targets for every utterance of ``utterances``.

    Args:
        root: cache root; the cache is ``root/<identity>`` (see :class:`TeacherTargetCache`).
        teacher: the loaded teacher; it runs on the teacher's device, ``batch_size`` utterances at a
            time, sorted by length within a shard.
        fingerprint: :func:`teacher_fingerprint` of ``teacher``.
        layers, dtype, store_logits: what to store (``layers`` e.g. ``"4,8,12"``).
        utterances: ``(utt_id, wav path)`` pairs (:func:`kd_core.data.read_wav_list`).
        source: the list's file name, recorded in ``manifest.json``.
        progress: a tqdm bar over utterances.
        on_shard: called as ``on_shard(i, name)`` after shard ``i`` is on disk.
    Returns:
        The cache, :attr:`~TeacherTargetCache.complete` ``True``.
    """
    require(int(batch_size) > 0, f"batch_size={batch_size}: must be a positive number of utterances")
    cache = TeacherTargetCache(root, fingerprint, layers, dtype, store_logits, teacher_info=describe_teacher(teacher))
    if cache.clean_temporary():
        logger.info("removed temporary shards left by an interrupted run in %s", cache.path)
    digest = _list_digest(utterances, shard_size, teacher.sample_rate)
    num_shards = (len(utterances) + shard_size - 1) // shard_size
    names = [f"b-{digest}-{i:06d}" for i in range(num_shards)]
    manifest = {"format": 1, "complete": False, "expected": len(utterances), "source": str(source), "list_digest": digest,
                "shard_size": int(shard_size), "num_shards": num_shards, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    cache.write_manifest(manifest)
    on_disk = set(cache.shard_names())
    todo = [i for i, n in enumerate(names) if n not in on_disk]
    logger.info("teacher cache %s: %d of %d shards already built", cache.path, num_shards - len(todo), num_shards)
    device = next(iter(teacher.parameters()), torch.zeros(())).device
    from tqdm import tqdm

    done_utts = len(utterances) - sum(len(utterances[i * shard_size : (i + 1) * shard_size]) for i in todo)
    with tqdm(total=len(utterances), initial=done_utts, unit="utt", disable=not progress, desc="teacher cache") as bar:
        for i in todo:
            chunk = utterances[i * shard_size : (i + 1) * shard_size]
            wavs = [load_audio(path, teacher.sample_rate) for _, path in chunk]
            keys = [utterance_keys(w[None], torch.tensor([w.numel()]))[0] for w in wavs]
            new = {k: w for k, w in zip(keys, wavs) if k not in cache}  # cached before / duplicate audio: skip
            order = sorted(new, key=lambda k: new[k].numel())
            entries = {}
            for start in range(0, len(order), batch_size):
                batch_keys = order[start : start + batch_size]
                wav, lens = pad_batch([new[k] for k in batch_keys])
                out = teacher(wav.to(device), lens.to(device))
                entries.update(zip(batch_keys, cache.rows(out)))
                bar.update(len(batch_keys))
            bar.update(len(chunk) - len(new))
            kept = list(dict.fromkeys(k for k in keys if k in entries))  # list order, duplicates once
            cache.write_shard(names[i], kept, [entries[k] for k in kept])
            if on_shard is not None:
                on_shard(i, names[i])
    on_disk = set(cache.shard_names())
    require(all(n in on_disk for n in names), f"{cache.path}: shards disappeared during the build; re-run it")
    cache.write_manifest({**manifest, "complete": True, "num_cached": len(cache), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return cache


def find_caches(path: Union[str, os.PathLike]) -> List[TeacherTargetCache]:
    """The cache at ``path`` (a folder with ``meta.json``) or every cache directly under it."""
    p = Path(path)
    require(p.is_dir(), f"{path}: no such folder; pass the --out of 'python -m kd_core.cache build' (or one cache in it)")
    if (p / "meta.json").is_file():
        return [TeacherTargetCache.open(p)]
    return [TeacherTargetCache.open(d) for d in sorted(p.iterdir()) if (d / "meta.json").is_file()]


def format_status(s: dict) -> str:
    """One line per cache: what, how many, complete or not."""
    expected = "?" if s["expected"] is None else s["expected"]
    state = "complete" if s["complete"] else ("INCOMPLETE (build not finished; re-run the build to resume)"
                                             if s["expected"] is not None else "INCOMPLETE (never built, filled online only)")
    extra = f", {s['temporary_dirs']} temporary shard dirs" if s["temporary_dirs"] else ""
    return (f"{s['path']}: teacher {s['teacher']}, layers {','.join(map(str, s['layers']))}, {s['dtype']}"
            f"{', logits' if s['logits'] else ''}: {s['cached']}/{expected} utterances cached, {s['shards']} shards, "
            f"{s['bytes'] / 2**20:.1f} MiB{extra}; {state}")
