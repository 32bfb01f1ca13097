"""Training and WER evaluation of the benchmark's teacher and students (resumable mid-training).

- every training runs :func:`kd_core.runner.train_loop` (AdamW + warm-up + cosine decay over steps or a
  wall-clock budget, a partial checkpoint every ``cfg.ckpt_every_s`` seconds: a killed run continues where it stopped);
- :func:`train_teacher`: the torchaudio wav2vec2-architecture teacher, CTC, time masking, saved as
  ``models/teacher.pt`` and loaded back as a :class:`~kd_core.teachers.torchaudio_teacher.TorchaudioTeacher`;
- :func:`build_teacher_cache`: the teacher's targets (mapped layers + CTC logits, fp16) over the training list;
- :func:`student_jobs` / :func:`run_student_job`: every student (KD methods and from-scratch), trained in a
  worker process with one thread, reading teacher targets from the cache (never running the teacher).
"""
from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import torch
from torch import nn

from .bench_config import BenchConfig
from .bench_data import (Utt, collate, duration_batches, length_groups, load_split, split_dirs, student_fbank_stats,
                         student_frontend, tokenizer)
from kd_core.atomic import atomic_torch_save, atomic_write_text
from kd_core.data import CharTokenizer, greedy_ctc
from kd_core.distiller import ctc_loss_sum, kd_objective
from kd_core.runner import train_loop
from kd_core.teachers.base import normalize_waveform

log = logging.getLogger("bench.train")
TEACHER_CONF = {"normalize_waveform": True}  # loader options of the teacher (part of the cache identity)


@torch.no_grad()
def evaluate(logits_fn: Callable, data: Sequence[Utt], tok: CharTokenizer, batch_s: float = 60.0) -> Dict:
    """WER/CER (jiwer, %) of greedy CTC over ``data``; ``logits_fn(wav, lengths) -> (logits, lengths)``."""
    import jiwer

    refs, hyps = [], []
    for g in length_groups(data, batch_s):
        wav, wl, _, _ = collate([data[i] for i in g], tok)
        logits, lens = logits_fn(wav, wl)
        hyps += [tok.decode(h) for h in greedy_ctc(logits, lens)]
        refs += [data[i][2] for i in g]
    return {"wer": 100 * jiwer.wer(refs, hyps), "cer": 100 * jiwer.cer(refs, hyps), "n": len(refs),
            "examples": [[r, h] for r, h in zip(refs, hyps)][:3]}


# ---- teacher ----------------------------------------------------------------------------------
def build_teacher_model(conf: Dict, vocab: int) -> nn.Module:
    from torchaudio.models import wav2vec2_model

    return wav2vec2_model(**conf, aux_num_out=vocab)


def add_time_masks(model: nn.Module, max_width: int = 5, frames_per_mask: int = 50):
    """SpecAugment-style time masking on the projected CNN features (training only): one mask of up to
    ``max_width`` frames per full ``frames_per_mask`` frames is zeroed, so utterances shorter than that (FSDD's
    single words, ~20 frames, where one mask hid a fifth of the word and the teacher learnt to answer them
    with blanks) are never masked. Returns the hook handle."""
    def hook(module, args, out):
        if not module.training:
            return None
        out = out.clone()
        b, t, _ = out.shape
        for i in range(b):
            for _ in range(t // frames_per_mask):
                w = int(torch.randint(0, max_width + 1, ()))
                s = int(torch.randint(0, max(1, t - w), ()))
                out[i, s : s + w] = 0.0
        return out

    return model.encoder.feature_projection.register_forward_hook(hook)


def augment(wav: torch.Tensor, rng: random.Random, sample_rate: int = 16000) -> torch.Tensor:
    """Teacher-only augmentation of one ``(S,)`` waveform: speed perturbation 0.9/1.0/1.1 (resampling: tempo
    and pitch change, which varies the voices) and, on half of the utterances, a 16 -> 8 -> 16 kHz round trip
    (the band limit of FSDD's 8 kHz recordings). The teacher-target cache is built on the original audio."""
    from torchaudio.functional import resample

    speed = rng.choice((0.9, 1.0, 1.1))
    if speed != 1.0:
        wav = resample(wav, int(sample_rate * speed), sample_rate)
    if rng.random() < 0.5:
        wav = resample(resample(wav, sample_rate, sample_rate // 2), sample_rate // 2, sample_rate)
    return wav


def train_teacher(out: Path, cfg: BenchConfig) -> Dict:
    """Train the teacher with CTC for ``cfg.teacher_minutes`` of wall clock; save ``models/teacher.pt``.

    Training-only helpers (not part of the saved teacher): time masks on the CNN features and an
    intermediate CTC head on layer ``cfg.teacher_inter_ctc`` (weight 0.3; shortens the path the CTC
    gradient takes through the randomly initialised stack, so the model leaves its all-blank start sooner);
    :func:`augment` when ``cfg.teacher_augment``.
    """
    tok = tokenizer(out)
    train = load_split(split_dirs(out)["train"])
    torch.manual_seed(cfg.seed)
    model = build_teacher_model(cfg.teacher, len(tok))
    holder = nn.ModuleDict({"model": model})
    hooks = [add_time_masks(model)] if cfg.teacher_time_masks else []
    inter = {}
    if cfg.teacher_inter_ctc:
        dim = cfg.teacher["encoder_embed_dim"]
        holder["inter_ctc"] = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, len(tok)))
        hooks.append(model.encoder.transformer.layers[cfg.teacher_inter_ctc - 1].register_forward_hook(
            lambda mod, args, output: inter.__setitem__("h", output[0])))

    rng = random.Random(cfg.seed)

    def step(idx):
        batch = [train[i] for i in idx]
        if cfg.teacher_augment:
            batch = [(u, augment(w, rng), t) for u, w, t in batch]
        wav, wl, y, yl = collate(batch, tok)
        logits, ol = model(normalize_waveform(wav, wl), wl)
        s, d = ctc_loss_sum(logits, ol, y, yl)
        stats = {"ctc": (s / d).item()}
        loss = s / d
        if cfg.teacher_inter_ctc:
            s2, d2 = ctc_loss_sum(holder["inter_ctc"](inter.pop("h")), ol, y, yl)
            loss = loss + 0.3 * s2 / d2
            stats["inter_ctc"] = (s2 / d2).item()
        return loss, stats

    batches = duration_batches(train, cfg.teacher_batch_s, cfg.seed, sorted_first_epoch=cfg.teacher_sortagrad)
    info = train_loop(holder, step, batches, cfg.teacher_lr, cfg.teacher_warmup, out / "models/teacher.partial.pt",
                      steps=cfg.teacher_max_steps, budget_s=60 * cfg.teacher_minutes, ckpt_every_s=cfg.ckpt_every_s,
                      desc="teacher", log_every=25)
    for h in hooks:
        h.remove()
    n = sum(p.numel() for p in model.parameters())
    atomic_torch_save({"config": cfg.teacher, "vocab": len(tok), "tokens": tok.symbols, "state_dict": model.state_dict(),
                 "train": info, "params": n}, out / "models/teacher.pt")
    (out / "models/teacher.partial.pt").unlink(missing_ok=True)
    tail = info["curve"][-50:]
    return {"params": n, "steps": info["steps"], "seconds": info["seconds"],
            "final_ctc": sum(c["ctc"] for c in tail) / max(1, len(tail))}


def load_teacher(out: Path):
    """``models/teacher.pt`` -> frozen :class:`TorchaudioTeacher` (waveform normalised per utterance)."""
    from kd_core.teachers.torchaudio_teacher import TorchaudioTeacher

    ck = torch.load(out / "models/teacher.pt", weights_only=False)
    model = build_teacher_model(ck["config"], ck["vocab"])
    model.load_state_dict(ck["state_dict"])
    return TorchaudioTeacher(model.eval(), **TEACHER_CONF)


def evaluate_teacher(out: Path) -> Dict:
    tok, teacher = tokenizer(out), load_teacher(out)

    def fwd(wav, wl):
        o = teacher(wav, wl)
        return o.logits, o.lengths

    dirs = split_dirs(out)
    return {split: evaluate(fwd, load_split(dirs[split]), tok) for split in ("valid", "test", "fsdd_test")}


# ---- teacher-target cache --------------------------------------------------------------------
def build_teacher_cache(out: Path, cfg: BenchConfig) -> Dict:
    """Targets of the cached layers + CTC logits (fp16) for every training utterance."""
    from kd_core.cache import build_cache, read_wav_list, teacher_fingerprint

    teacher = load_teacher(out)
    path = str(out / "models/teacher.pt")
    fp = teacher_fingerprint("torchaudio", path, teacher=teacher, **TEACHER_CONF)
    utts = read_wav_list(wav_scp=str(split_dirs(out)["train"] / "wav.scp"))
    cache = build_cache(out / "cache", teacher, fp, cfg.cache_layers, utts, dtype="float16", store_logits=True,
                        shard_size=512, batch_size=8, source=str(split_dirs(out)["train"] / "wav.scp"))
    st = cache.status()
    return {"utterances": st["cached"], "complete": st["complete"], "bytes": st["bytes"], "layers": cfg.cache_layers}


def cached_teacher(out: Path, cfg: BenchConfig):
    """The training targets from the cache (mode ``read``: the teacher model is never loaded)."""
    from kd_core.cache import load_cached_teacher

    return load_cached_teacher(out / "cache", "torchaudio", str(out / "models/teacher.pt"), cfg.cache_layers,
                               mode="read", dtype="float16", store_logits=True, **TEACHER_CONF)


# ---- students --------------------------------------------------------------------------------
def kd_conf(layer_map: str) -> Dict:
    """User options of every KD loss here: the layer map and ``target_norm``; every method option keeps the core
    loss's default (as in the ESPnet recipe's presets). ``target_norm`` is a property of this teacher, not of a
    method: the pre-LN teacher's raw hidden states (squared error ~400-800 per dimension at layers 3-8) made the
    hidden-layer loss dwarf CTC; a non-streaming LF-MMI student taught that way reached 83 % WER."""
    return {"layer_map": layer_map, "target_norm": True}


def student_jobs(cfg: BenchConfig) -> List[Dict]:
    """Every student of the benchmark, in the order they are trained (``depends``: trained before)."""
    def tag(ms):
        return f"{ms}ms" if ms else "full"

    jobs = [{"name": "twostage1_full", "method": "two-stage, stage 1 (LF-MMI, non-streaming)", "chunk_ms": 0,
             "kd": "lfmmi", "teacher": "cache", "depends": []}]
    for ms in cfg.chunks_ms:
        jobs.append({"name": f"layer_kd_{tag(ms)}", "method": "layer KD", "chunk_ms": ms, "kd": "layerwise",
                     "teacher": "cache", "depends": []})
        jobs.append({"name": f"scratch_{tag(ms)}", "method": "from scratch", "chunk_ms": ms, "kd": None,
                     "teacher": None, "depends": []})
    m = cfg.method_chunk_ms
    jobs += [{"name": f"aux_apc_{tag(m)}", "method": "aux + APC", "chunk_ms": m, "kd": "aux_apc", "teacher": "cache",
              "depends": []},
             {"name": f"lfmmi_{tag(m)}", "method": "LF-MMI (DistillW2V2)", "chunk_ms": m, "kd": "lfmmi", "teacher": "cache",
              "depends": []},
             {"name": f"twostage2_{tag(m)}", "method": "two-stage (LF-MMI)", "chunk_ms": m, "kd": "lfmmi",
              "teacher": "student:twostage1_full", "init": "twostage1_full", "depends": ["twostage1_full"]}]
    return jobs


def build_student(out: Path, cfg: BenchConfig, chunk_ms: int, vocab: int):
    from kd_core.streaming import ms_to_frames
    from kd_core.students import streaming_student
    from kd_core.students.frontends import frontend_timing_ms

    shift_ms, _ = frontend_timing_ms(student_frontend(cfg), 16000)
    student = streaming_student(**cfg.student, chunk_size=ms_to_frames(chunk_ms, shift_ms), vocab_size=vocab)
    student.frontend.set_global_stats(*student_fbank_stats(out))
    return student


def load_student(out: Path, cfg: BenchConfig, name: str):
    ck = torch.load(out / f"models/{name}.pt", weights_only=False)
    student = build_student(out, cfg, ck["chunk_ms"], ck["vocab"])
    student.load_state_dict(ck["state_dict"])
    return student.eval()


def den_graph_fn(out: Path, tok: CharTokenizer, train: Sequence[Utt]):
    """The LF-MMI denominator graph (token bigram of the training transcripts, CTC topology), cached."""
    from kd_core.losses.lfmmi_graph import cached_den_graph

    return lambda: cached_den_graph([tok.encode(t) for _, _, t in train], len(tok), str(out / "den_graph"))


def make_kd_loss(out: Path, cfg: BenchConfig, job: Dict, student, teacher, tok, train) -> nn.Module:
    from kd_core.distiller import kd_context
    from kd_core.losses.registry import build_kd_loss

    ctx = kd_context(teacher, student, den_graph_fn(out, tok, train))
    layer_map = cfg.stage2_layer_map if job["teacher"].startswith("student:") else cfg.layer_map
    return build_kd_loss(job["kd"], kd_conf(layer_map), ctx)


def job_teacher(out: Path, cfg: BenchConfig, job: Dict):
    if job["teacher"] == "cache":
        return cached_teacher(out, cfg)
    from kd_core.teachers.student_teacher import StudentTeacher

    return StudentTeacher(load_student(out, cfg, job["teacher"].split(":", 1)[1]))


def train_student(out: Path, cfg: BenchConfig, job: Dict) -> Dict:
    """Train one student (same seed, batches, optimiser and steps for every job); save ``models/<name>.pt``."""
    tok = tokenizer(out)
    train = load_split(split_dirs(out)["train"])
    torch.manual_seed(cfg.seed)
    student = build_student(out, cfg, job["chunk_ms"], len(tok))
    if job.get("init"):
        student.load_state_dict(load_student(out, cfg, job["init"]).state_dict())
    teacher = job_teacher(out, cfg, job) if job["kd"] else None
    kd_loss = make_kd_loss(out, cfg, job, student, teacher, tok, train) if job["kd"] else None
    torch.manual_seed(cfg.seed + 1)  # the KD heads' initialisation does not shift the dropout RNG
    holder = nn.ModuleDict({"student": student, **({"kd": kd_loss} if kd_loss is not None else {})})

    def step(idx):
        wav, wl, y, yl = collate([train[i] for i in idx], tok)
        s_out = student(wav, wl)
        t_out = teacher(wav, wl) if teacher is not None else None
        s, d, stats = kd_objective(kd_loss, s_out, t_out, 1.0 if kd_loss is not None else 0.0, 1.0, y, yl)
        return s / d, stats

    info = train_loop(holder, step, duration_batches(train, cfg.student_batch_s, cfg.seed), cfg.student_lr,
                      cfg.student_warmup, out / f"models/{job['name']}.partial.pt", steps=cfg.student_steps,
                      ckpt_every_s=cfg.ckpt_every_s, desc=job["name"])
    atomic_torch_save({"state_dict": student.state_dict(), "chunk_ms": job["chunk_ms"], "vocab": len(tok), "job": job,
                 "train": info}, out / f"models/{job['name']}.pt")
    (out / f"models/{job['name']}.partial.pt").unlink(missing_ok=True)
    return {"steps": info["steps"], "seconds": info["seconds"], "sec_per_step": info["seconds"] / max(1, info["steps"]),
            "final_ctc": sum(c.get("ctc", 0.0) for c in info["curve"][-20:]) / max(1, len(info["curve"][-20:]))}


def evaluate_student(out: Path, cfg: BenchConfig, name: str) -> Dict:
    """WER of the masked full forward, which equals chunk-by-chunk streaming (checked in the measure stage)."""
    tok, student = tokenizer(out), load_student(out, cfg, name)

    def fwd(wav, wl):
        o = student(wav, wl)
        return o.logits, o.lengths

    dirs = split_dirs(out)
    return {split: evaluate(fwd, load_split(dirs[split]), tok) for split in ("test", "fsdd_test")}


def run_student_job(out_dir: str, cfg: BenchConfig, job: Dict) -> Dict:
    """Worker entry point (one thread): train ``job`` unless ``models/<name>.pt`` exists, then score it
    into ``scores/<name>.json`` unless present. Logs go to ``logs/<name>.log``."""
    out = Path(out_dir)
    torch.set_num_threads(1)
    handler = logging.FileHandler(out / f"logs/{job['name']}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        score_path = out / f"scores/{job['name']}.json"
        if score_path.exists():
            return json.loads(score_path.read_text())
        train_info = None
        if not (out / f"models/{job['name']}.pt").exists():
            train_info = train_student(out, cfg, job)
        else:
            ck = torch.load(out / f"models/{job['name']}.pt", weights_only=False)["train"]
            train_info = {"steps": ck["steps"], "seconds": ck["seconds"], "sec_per_step": ck["seconds"] / max(1, ck["steps"])}
        t0 = time.perf_counter()
        score = {"job": job, "train": train_info, **evaluate_student(out, cfg, job["name"]),
                 "eval_seconds": round(time.perf_counter() - t0, 1)}
        atomic_write_text(score_path, json.dumps(score, indent=1) + "\n")
        return score
    finally:
        root.removeHandler(handler)
        handler.close()
