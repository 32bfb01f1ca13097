"""WER evaluation of the benchmark's teacher, and training and evaluation of its students (resumable mid-training).

- the teacher is the zoo's ``hubert_mini_ctc`` (:func:`load_teacher`: the project's fairseq loader; never trained here);
- every student training runs :func:`kd_core.runner.train_loop` (AdamW + warm-up + cosine decay over steps, a
  partial checkpoint every ``cfg.ckpt_every_s`` seconds: a killed run continues where it stopped);
- :func:`build_teacher_cache`: the teacher's targets (mapped layers + CTC logits, fp16) over the training list;
- :func:`student_jobs` / :func:`run_student_job`: every student (KD methods and from-scratch), trained in a
  worker process with one thread, reading teacher targets from the cache (never running the teacher).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from .bench_config import PRESET_ROWS, RNNT_TEACHER_SHAPE, ZOO_CODEBOOK_TEACHER, BenchConfig, preset_student
from .bench_data import (Utt, collate, duration_batches, labelled_subset, length_groups, load_split, split_dirs,
                         student_fbank_stats, student_frontend, teacher_files, tokenizer)
from kd_core.atomic import atomic_torch_save, atomic_write_text
from kd_core.data import CharTokenizer, greedy_ctc
from kd_core.distiller import kd_objective, transducer_objective
from kd_core.runner import train_loop
from kd_core.students.transducer import is_transducer

log = logging.getLogger("bench.train")


@torch.no_grad()
def evaluate(logits_fn: Callable, data: Sequence[Utt], tok: CharTokenizer, batch_s: float = 60.0) -> Dict:
    """WER/CER (jiwer, %) over ``data`` of greedy CTC, ``logits_fn(wav, lengths) -> (logits, lengths)``, or of any
    search, ``logits_fn(wav, lengths) -> token ids per utterance`` (transducers)."""
    import jiwer

    refs, hyps = [], []
    for g in length_groups(data, batch_s):
        wav, wl, _, _ = collate([data[i] for i in g], tok)
        got = logits_fn(wav, wl)
        ids = greedy_ctc(*got) if isinstance(got, tuple) else got
        hyps += [tok.decode(h) for h in ids]
        refs += [data[i][2] for i in g]
    return {"wer": 100 * jiwer.wer(refs, hyps), "cer": 100 * jiwer.cer(refs, hyps), "n": len(refs),
            "examples": [[r, h] for r, h in zip(refs, hyps)][:3]}


# ---- teacher ----------------------------------------------------------------------------------
def load_teacher(cfg: BenchConfig):
    """The zoo teacher through the project's loader (``load_teacher("fairseq", ...)``), frozen, eval mode."""
    from tools.zoo_eval import load_ctc_teacher

    ckpt, dict_dir = teacher_files(cfg)
    return load_ctc_teacher(ckpt, dict_dir)[0]


def describe_teacher(cfg: BenchConfig) -> Dict:
    """Parameters, shape and sha256 of the teacher checkpoint (the zoo card states the same hash)."""
    from kd_core.cache.keys import file_sha256

    ckpt, _ = teacher_files(cfg)
    teacher = load_teacher(cfg)
    return {"path": cfg.teacher_path, "sha256": file_sha256(str(ckpt)),
            "params": sum(p.numel() for p in teacher.parameters()), "layers": teacher.num_layers,
            "width": teacher.hidden_size, "vocab": teacher.vocab_size}


def evaluate_teacher(out: Path, cfg: BenchConfig) -> Dict:
    tok, teacher = tokenizer(out), load_teacher(cfg)

    def fwd(wav, wl):
        o = teacher(wav, wl)
        return o.logits, o.lengths

    dirs = split_dirs(out)
    return {split: evaluate(fwd, load_split(dirs[split]), tok) for split in ("valid", "test", "fsdd_test")}


# ---- teacher-target cache --------------------------------------------------------------------
def build_teacher_cache(out: Path, cfg: BenchConfig) -> Dict:
    """Targets of the cached layers + CTC logits (fp16) for every training utterance."""
    from kd_core.cache import build_cache, read_wav_list, teacher_fingerprint

    teacher = load_teacher(cfg)
    ckpt, dict_dir = teacher_files(cfg)
    fp = teacher_fingerprint("fairseq", str(ckpt), teacher=teacher, data_dir=str(dict_dir))
    utts = read_wav_list(wav_scp=str(split_dirs(out)["train"] / "wav.scp"))
    cache = build_cache(out / "cache", teacher, fp, cfg.cache_layers, utts, dtype="float16", store_logits=True,
                        shard_size=512, batch_size=8, source=str(split_dirs(out)["train"] / "wav.scp"))
    st = cache.status()
    info = {"utterances": st["cached"], "complete": st["complete"], "bytes": st["bytes"], "layers": cfg.cache_layers}
    if cfg.suite == "methods":  # the codebook teacher's targets too (the discriminative loss never runs it online)
        from kd_core.teachers import load_teacher as load
        from tools.build_zoo import ROOT

        path = ROOT / ZOO_CODEBOOK_TEACHER
        teacher = load("fairseq", str(path))
        fp = teacher_fingerprint("fairseq", str(path), teacher=teacher)
        cb = build_cache(out / "cache_codebook", teacher, fp, cfg.cache_layers, utts, dtype="float16", store_logits=False,
                         shard_size=512, batch_size=8, source=str(split_dirs(out)["train"] / "wav.scp"))
        info["codebook_bytes"] = cb.status()["bytes"]
    return info


def cached_teacher(out: Path, cfg: BenchConfig):
    """The training targets from the cache (mode ``read``: the teacher model is never loaded)."""
    from kd_core.cache import load_cached_teacher

    ckpt, dict_dir = teacher_files(cfg)
    return load_cached_teacher(out / "cache", "fairseq", str(ckpt), cfg.cache_layers, mode="read", dtype="float16",
                               store_logits=True, data_dir=str(dict_dir))


def codebook_teacher(out: Path, cfg: BenchConfig):
    """The pre-trained HuBERT of the discriminative loss: its layers from its own cache (built by
    :func:`build_teacher_cache` in the methods suite), its codebook from the loaded model."""
    from kd_core.cache import load_cached_teacher
    from kd_core.teachers import load_teacher as load

    from tools.build_zoo import ROOT

    path = str(ROOT / ZOO_CODEBOOK_TEACHER)
    return load_cached_teacher(out / "cache_codebook", "fairseq", path, cfg.cache_layers, mode="fill", dtype="float16",
                               store_logits=False, teacher=load("fairseq", path))


# ---- students --------------------------------------------------------------------------------
def kd_conf(layer_map: str) -> Dict:
    """User options of every KD loss here: the layer map and ``target_norm``; every method option keeps the core
    loss's default (as in the ESPnet recipe's presets). ``target_norm`` is a property of the teacher, not of a
    method: the benchmark's earlier pre-LN teacher's raw hidden states (squared error ~400-800 per dimension at
    layers 3-8) made the hidden-layer loss dwarf CTC (a non-streaming LF-MMI student taught that way reached 83 %
    WER); the zoo teacher's runs keep the setting (not re-measured without it)."""
    return {"layer_map": layer_map, "target_norm": True}


def method_jobs(cfg: BenchConfig) -> List[Dict]:
    """The methods suite, all at the method chunk with the budget of layer KD: the references (layer KD and from
    scratch, the main student), layer KD into every shape preset of ``PRESET_ROWS`` (``layer_map auto``), the HuBERT
    discriminative loss (pre-trained codebook teacher), front-end KD (stage A regresses teacher layer 0 without
    an ASR loss, stage B is layer KD from it), aux + APC, LF-MMI, and two-stage (DistillW2V2: a non-streaming LF-MMI
    student, then the streaming student initialised from it and taught by it)."""
    tag = f"{cfg.method_chunk_ms}ms"
    ref = dict(chunk_ms=cfg.method_chunk_ms, depends=[])
    jobs = [{"name": f"scratch_{tag}", "method": "from scratch", "kd": None, "teacher": None, **ref},
            {"name": f"layer_kd_{tag}", "method": "layer KD", "kd": "layerwise", "teacher": "cache", **ref}]
    jobs += [{"name": f"layer_kd_{tag}_{shape}", "method": f"layer KD, preset {shape}" + (" (SEW)" if "sew" in shape else ""),
              "kd": "layerwise", "teacher": "cache", "student": shape, "layer_map": "auto", **ref} for shape in PRESET_ROWS]
    jobs += [{"name": f"hubert_disc_{tag}", "method": "HuBERT discriminative (codeword) loss, hubert_mini", "kd": "hubert_disc",
              "teacher": "codebook", **ref},
             {"name": "frontend_a", "method": "front-end KD, stage A (teacher layer 0, no ASR loss)", "kd": "layerwise",
              "teacher": "cache", "layer_map": "0:0", "ctc_weight": 0.0, **ref},
             {"name": f"frontend_kd_{tag}", "method": "front-end KD, stage B (layer KD from stage A)", "kd": "layerwise",
              "teacher": "cache", "init": "frontend_a", **ref, "depends": ["frontend_a"]}]
    jobs += [{"name": f"aux_apc_{tag}", "method": "aux + APC", "kd": "aux_apc", "teacher": "cache", **ref},
             {"name": f"lfmmi_{tag}", "method": "LF-MMI (DistillW2V2)", "kd": "lfmmi", "teacher": "cache", **ref},
             {"name": "twostage1_full", "method": "two-stage, stage 1 (LF-MMI, non-streaming)", "chunk_ms": 0,
              "kd": "lfmmi", "teacher": "cache", "depends": []},
             {"name": f"twostage2_{tag}", "method": "two-stage, stage 2 (LF-MMI from stage 1)", "kd": "lfmmi",
              "teacher": "student:twostage1_full", "init": "twostage1_full", **ref, "depends": ["twostage1_full"]}]
    return jobs


def rnnt_jobs(cfg: BenchConfig) -> List[Dict]:
    """The rnnt suite (Hwang et al. 2022), low-resource setting at the method chunk: transcripts for
    ``cfg.lowres_fraction`` of the training set, the rest is audio. Students are streaming transducers of the main
    student's shape. (a) a bigger non-streaming transducer teacher (all labels) -> the student: soft targets (collapsed
    lattice KL on every utterance, over the reference or the teacher's 1-best) vs hard targets (its 1-best as the
    missing transcripts); also hard targets from the zoo's CTC teacher; (b) self-training: the from-scratch student
    teaches a student of its own architecture, soft vs hard. Soft-target jobs are ``paired`` (:func:`job_batches`).
    A first run without pairing (mixed batches: a tenth of the supervised audio per step) and with KD weight 1 gave
    85.6 -> 90.6 % WER synth, 16.0 -> 85.7 % FSDD: the student had seen a tenth of the labels."""
    tag, low = f"{cfg.method_chunk_ms}ms", cfg.lowres_fraction
    base = dict(chunk_ms=cfg.method_chunk_ms, transducer=True, labels=low)
    # soft targets: the scratch student's labelled batches + as much unlabelled audio per step (job_batches); the KL is a
    # per-node mean (~0.5) against a per-utterance transducer loss (~40): weight 50 makes them comparable (not tuned)
    soft = dict(paired=True, kd_weight=50.0)
    return [
        {"name": "rnnt_teacher_full", "method": f"transducer teacher ({RNNT_TEACHER_SHAPE}, non-streaming, all labels)",
         "chunk_ms": 0, "transducer": True, "student": RNNT_TEACHER_SHAPE, "kd": None, "teacher": None, "depends": []},
        {"name": f"rnnt_scratch_{tag}", "method": "from scratch (labelled part only)", "kd": None, "teacher": None,
         "depends": [], **base},
        {"name": f"rnnt_soft_{tag}", "method": "soft targets from the transducer teacher", "kd": "rnnt",
         "teacher": "student:rnnt_teacher_full", "depends": ["rnnt_teacher_full"], **soft, **base},
        {"name": f"rnnt_hard_{tag}", "method": "hard targets from the transducer teacher", "kd": None, "teacher": None,
         "pseudo": "rnnt_teacher_full", "depends": ["rnnt_teacher_full"], **base},
        {"name": f"rnnt_hard_zoo_{tag}", "method": "hard targets from the zoo CTC teacher", "kd": None, "teacher": None,
         "pseudo": "zoo", "depends": [], **base},
        {"name": f"rnnt_self_soft_{tag}", "method": "self-training, soft targets (teacher: the scratch student)", "kd": "rnnt",
         "teacher": f"student:rnnt_scratch_{tag}", "depends": [f"rnnt_scratch_{tag}"], **soft, **base},
        {"name": f"rnnt_self_hard_{tag}", "method": "self-training, hard targets (teacher: the scratch student)", "kd": None,
         "teacher": None, "pseudo": f"rnnt_scratch_{tag}", "depends": [f"rnnt_scratch_{tag}"], **base},
    ]


def expected_cost(job: Dict) -> float:
    """A job's training time in units of one plain student's: its step factor, times ~3.5 for a paired step (the
    labelled batch plus as much unlabelled audio; measured in the main suite's run). Workers take the longest first."""
    return job.get("steps_factor", 1) * (3.5 if job.get("paired") else 1.0)


def student_jobs(cfg: BenchConfig) -> List[Dict]:
    """Every student of the benchmark, in the order they are trained (``depends``: trained before).

    Main suite (KD vs scratch), equal labels: layer KD and from scratch at every chunk of ``cfg.chunks_ms``. Low
    resource (``labels``): transcripts for ``cfg.lowres_fraction`` of the training set; layer KD also reads the rest as
    audio (teacher targets; ``paired`` batches, so it sees exactly the scratch student's labelled batches), from
    scratch cannot. Convergence check (``steps_factor``): the scratch student at the method chunk trained
    ``cfg.convergence_factor`` times longer. The other methods are in the methods suite (:func:`method_jobs`)."""
    if cfg.suite == "methods":
        return method_jobs(cfg)
    if cfg.suite == "rnnt":
        return rnnt_jobs(cfg)

    def tag(ms):
        return f"{ms}ms" if ms else "full"

    m = cfg.method_chunk_ms
    pct = f"{100 * cfg.lowres_fraction:g} % labels"
    jobs = [{"name": f"scratch_{tag(m)}_x{cfg.convergence_factor}", "method": f"from scratch, {cfg.convergence_factor}x "
             "steps (convergence check)", "chunk_ms": m, "kd": None, "teacher": None, "steps_factor": cfg.convergence_factor,
             "depends": []}]
    for ms in cfg.chunks_ms:
        jobs.append({"name": f"layer_kd_{tag(ms)}", "method": "layer KD", "chunk_ms": ms, "kd": "layerwise",
                     "teacher": "cache", "depends": []})
        jobs.append({"name": f"scratch_{tag(ms)}", "method": "from scratch", "chunk_ms": ms, "kd": None,
                     "teacher": None, "depends": []})
    # low resource: KD is paired (job_batches): the scratch student's labelled batches + as much audio only KD reads
    jobs += [{"name": f"lowres_layer_kd_{tag(m)}", "method": f"layer KD, {pct} + the rest as audio", "chunk_ms": m,
              "kd": "layerwise", "teacher": "cache", "labels": cfg.lowres_fraction, "paired": True, "depends": []},
             {"name": f"lowres_scratch_{tag(m)}", "method": f"from scratch, {pct}", "chunk_ms": m, "kd": None,
              "teacher": None, "labels": cfg.lowres_fraction, "depends": []}]
    return jobs


def build_student(out: Path, cfg: BenchConfig, chunk_ms: int, vocab: int, shape: Optional[str] = None,
                  transducer: bool = False):
    """The configured student, or shape preset ``shape`` (same front-end, dropout and kernel as the benchmark's);
    ``transducer``: the same front-end and encoder with the core's stateless predictor + joiner instead of CTC."""
    from kd_core.streaming import ms_to_frames
    from kd_core.students import streaming_student
    from kd_core.students.frontends import frontend_timing_ms
    from kd_core.students.transducer import transducer_student

    shift_ms, _ = frontend_timing_ms(student_frontend(cfg), 16000)
    conf = preset_student(shape) if shape else cfg.student
    if transducer:
        student = transducer_student(vocab, **conf, chunk_size=ms_to_frames(chunk_ms, shift_ms))
    else:
        student = streaming_student(**conf, chunk_size=ms_to_frames(chunk_ms, shift_ms), vocab_size=vocab)
    student.frontend.set_global_stats(*student_fbank_stats(out, conf["frontend_conf"]["n_mels"]))
    return student


def load_student(out: Path, cfg: BenchConfig, name: str):
    ck = torch.load(out / f"models/{name}.pt", weights_only=False)
    student = build_student(out, cfg, ck["chunk_ms"], ck["vocab"], ck["job"].get("student"), ck["job"].get("transducer", False))
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
    if job["kd"] == "rnnt":  # the collapsed-lattice KL with the core loss's defaults
        return build_kd_loss("rnnt", {}, ctx)
    layer_map = job.get("layer_map") or (cfg.stage2_layer_map if job["teacher"].startswith("student:") else cfg.layer_map)
    return build_kd_loss(job["kd"], kd_conf(layer_map), ctx)


def job_teacher(out: Path, cfg: BenchConfig, job: Dict):
    if job["teacher"] == "cache":
        return cached_teacher(out, cfg)
    if job["teacher"] == "codebook":  # targets from its cache, the codebook from the loaded model
        return codebook_teacher(out, cfg)
    from kd_core.teachers.student_teacher import StudentTeacher

    return StudentTeacher(load_student(out, cfg, job["teacher"].split(":", 1)[1]))


@torch.no_grad()
def pseudo_labels(out: Path, cfg: BenchConfig, source: str, train: Sequence[Utt], tok: CharTokenizer) -> Dict[str, str]:
    """1-best transcripts of every training utterance by ``source`` (``zoo``: the zoo CTC teacher's greedy CTC, from
    the cached logits; else a trained transducer job's own batched greedy search), kept in ``pseudo/<source>.json``."""
    from kd_core.pseudo_label import ids_to_text

    path = out / f"pseudo/{source}.json"
    if path.exists():
        return json.loads(path.read_text())
    model = cached_teacher(out, cfg) if source == "zoo" else load_student(out, cfg, source)
    labels = {}
    for g in length_groups(train, 60.0):
        wav, wl, _, _ = collate([train[i] for i in g], tok)
        o = model(wav, wl)
        ids = greedy_ctc(o.logits, o.lengths) if source == "zoo" else model.greedy(o.hidden[-1], o.lengths).hyps
        labels.update({train[i][0]: ids_to_text(h, tok.symbols).upper() for i, h in zip(g, ids)})
    path.parent.mkdir(exist_ok=True)
    atomic_write_text(path, json.dumps(labels, indent=0) + "\n")
    return labels


def training_data(out: Path, cfg: BenchConfig, job: Dict, tok: CharTokenizer):
    """``(train, labelled)``: the job's training utterances and the indices with a (true or pseudo) transcript
    (``None``: all). Low resource: transcripts for ``job["labels"]`` of the set; a job with a teacher also reads the
    rest as audio; a ``pseudo`` job gets the rest transcribed by that source (empty 1-bests dropped); a soft-target
    transducer job reads the rest with its teacher's 1-best as the lattice reference (empty ones too; no transducer
    loss there)."""
    train = load_split(split_dirs(out)["train"])
    if not job.get("labels"):
        return train, None
    labelled = set(labelled_subset(train, job["labels"]))
    source = job.get("pseudo") or (job["teacher"].split(":", 1)[1] if job["kd"] == "rnnt" else None)
    if source is not None:
        hyps = pseudo_labels(out, cfg, source, train, tok)
        train = [u if i in labelled else (u[0], u[1], hyps[u[0]]) for i, u in enumerate(train)]
        # hard targets: an empty 1-best is no transcript; soft targets: it is a lattice (blank only) like any other
        keep = [i for i, u in enumerate(train) if i in labelled or u[2].strip() or not job.get("pseudo")]
        labelled = {n for n, i in enumerate(keep) if i in labelled or job.get("pseudo")}
        train = [train[i] for i in keep]
        return train, (None if len(labelled) == len(train) else labelled)
    if not job["kd"]:  # without a teacher the audio without transcripts teaches nothing
        return [train[i] for i in sorted(labelled)], None
    return train, labelled


def job_batches(train: Sequence[Utt], labelled, job: Dict, cfg: BenchConfig):
    """The job's batches (index lists into ``train``). ``paired`` jobs (soft-target KD with scarce labels) draw each step's
    labelled batch exactly as the from-scratch student does (same utterances, order and seed) and add an unlabelled
    batch of the same duration that only the KD term reads, so both see the same supervised data."""
    if not job.get("paired") or labelled is None:
        yield from duration_batches(train, cfg.student_batch_s, cfg.seed)
        return
    lab = [i for i in range(len(train)) if i in labelled]
    unl = [i for i in range(len(train)) if i not in labelled]
    lab_b = duration_batches([train[i] for i in lab], cfg.student_batch_s, cfg.seed)
    unl_b = duration_batches([train[i] for i in unl], cfg.student_batch_s, cfg.seed + 1)
    for a, b in zip(lab_b, unl_b):
        yield [lab[i] for i in a] + [unl[j] for j in b]


def train_student(out: Path, cfg: BenchConfig, job: Dict) -> Dict:
    """Train one student (same seed, batches, optimiser and steps for every job); save ``models/<name>.pt``."""
    tok = tokenizer(out)
    train, labelled = training_data(out, cfg, job, tok)  # labelled: indices into ``train`` with a transcript (None: all)
    torch.manual_seed(cfg.seed)
    student = build_student(out, cfg, job["chunk_ms"], len(tok), job.get("student"), job.get("transducer", False))
    if job.get("init"):
        student.load_state_dict(load_student(out, cfg, job["init"]).state_dict())
    teacher = job_teacher(out, cfg, job) if job["kd"] else None
    kd_loss = make_kd_loss(out, cfg, job, student, teacher, tok, train) if job["kd"] else None
    torch.manual_seed(cfg.seed + 1)  # the KD heads' initialisation does not shift the dropout RNG
    holder = nn.ModuleDict({"student": student, **({"kd": kd_loss} if kd_loss is not None else {})})

    def step(idx):
        wav, wl, y, yl = collate([train[i] for i in idx], tok)
        s_out = student(wav, wl)
        mask = None if labelled is None else torch.tensor([i in labelled for i in idx])
        if job.get("transducer"):
            lattice = teacher.transducer_lattice(wav, wl, y, yl) if teacher is not None else None
            s, d, stats = transducer_objective(kd_loss, student, s_out, lattice, None, job.get("kd_weight", 1.0) if kd_loss
                                               is not None else 0.0, 1.0, 0.0, y, yl, labelled=mask)
            return s / d, stats
        t_out = teacher(wav, wl) if teacher is not None else None
        s, d, stats = kd_objective(kd_loss, s_out, t_out, 1.0 if kd_loss is not None else 0.0, job.get("ctc_weight", 1.0),
                                   y, yl, labelled=mask)
        return s / d, stats

    steps = cfg.student_steps * job.get("steps_factor", 1)
    info = train_loop(holder, step, job_batches(train, labelled, job, cfg), cfg.student_lr,
                      cfg.student_warmup, out / f"models/{job['name']}.partial.pt", steps=steps,
                      ckpt_every_s=cfg.ckpt_every_s, desc=job["name"])
    atomic_torch_save({"state_dict": student.state_dict(), "chunk_ms": job["chunk_ms"], "vocab": len(tok), "job": job,
                 "train": info}, out / f"models/{job['name']}.pt")
    (out / f"models/{job['name']}.partial.pt").unlink(missing_ok=True)
    key = "rnnt" if job.get("transducer") else "ctc"
    return {"steps": info["steps"], "seconds": info["seconds"], "sec_per_step": info["seconds"] / max(1, info["steps"]),
            f"final_{key}": sum(c.get(key, 0.0) for c in info["curve"][-20:]) / max(1, len(info["curve"][-20:])),
            "utterances": len(train), "labelled": len(train) if labelled is None else len(labelled)}


def evaluate_student(out: Path, cfg: BenchConfig, name: str) -> Dict:
    """WER of the masked full forward, which equals chunk-by-chunk streaming (checked in the measure stage)."""
    tok, student = tokenizer(out), load_student(out, cfg, name)

    def fwd(wav, wl):
        o = student(wav, wl)
        return student.greedy(o.hidden[-1], o.lengths).hyps if is_transducer(student) else (o.logits, o.lengths)

    dirs = split_dirs(out)
    return {split: evaluate(fwd, load_split(dirs[split]), tok) for split in ("valid", "test", "fsdd_test")}


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
