#!/usr/bin/env python
"""Build the miniature model zoo (``zoo/``) the way users' teachers are made: HuBERT pre-training on
unlabelled audio with fairseq's own task and criterion, then CTC fine-tuning on a smaller labelled set.

    python -m tools.build_zoo hubert_mini       # data -> MFCC k-means -> fairseq-hydra-train pre-training -> zoo/hubert_mini/
    python -m tools.build_zoo hubert_mini_ctc   # fine-tuning from zoo/hubert_mini -> test WER -> zoo/hubert_mini_ctc/
    python -m tools.build_zoo hubert_mini --more-updates 4000   # continue the shipped model (any machine), N more
    python -m tools.build_zoo scratch_s12       # the quality bar's from-scratch student (tools/zoo_baseline.py)
    python -m tools.build_zoo status

Options: ``--work exp/zoo`` (corpora, labels, fairseq runs), ``--threads 1`` (torch threads of the
training), ``--fsdd-dir ../shared/data/fsdd``. Every step is resumable: finished steps are skipped
(``<work>/stamps/``), the corpora reuse finished wavs, and fairseq resumes from ``checkpoint_last.pt``
(saved every 50 updates, a few CPU minutes), so a killed build continues where it stopped when the same
command is run again. ``exp/`` does not travel between machines; the shipped weights and their history
(``zoo/hubert_mini/history.json``) do: ``--more-updates N`` continues pre-training from them (fresh optimizer), and
each finished continuation is one more run in the history and on the card. Progress and ETA come from fairseq's own
log. Not part of CI (CPU hours).

Data (``<work>/corpus``): a labelled set (closed 3,000-word WordNet vocabulary, 24 training voices, plus
FSDD train), an unlabelled pool ~5x larger (any WordNet sentence except held-out ones, noise, reverberation
and speed perturbation, same training voices), and test sets never used for training or model selection:
unseen-voice synthetic speech (``test_synth``) and FSDD's official test split (``test_fsdd``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from kd_core.atomic import atomic_torch_save, atomic_write, atomic_write_text
from kd_core.cache.keys import file_sha256
from kd_core.errors import require
from tools import make_corpus
from tools.zoo_cards import (CTC_CURVE, ZOO, data_lines, hubert_mini_card, hubert_mini_ctc_card, read_history, record_run,
                             write_card)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf/fairseq/zoo"
log = logging.getLogger("build_zoo")

#: corpora of the zoo (``make_corpus.make_synthetic_corpus`` arguments)
LABELLED = dict(seed=11, num_train=4000, num_valid=200, num_test=400, text_source="wordnet-closed", vocab_size=3000)
POOL = dict(seed=12, num_train=16000, num_valid=1, num_test=1, text_source="wordnet-pool", vocab_size=3000,
            noise_snr_db="10:40", reverb=50, speed_perturb=True)
#: k-means of iteration 1: K = 100 clusters of 39-dim MFCC (13 + deltas + delta-deltas) at 100 Hz, fitted on
#: this share of the pre-training utterances (HuBERT's iteration-1 choice; ~40 English phones x a few states)
KMEANS_K, KMEANS_SHARE = 100, 0.1


def _stamp(work: Path, step: str) -> Path:
    return work / "stamps" / f"{step}.json"


def _done(work: Path, step: str) -> bool:
    return _stamp(work, step).is_file()


def _mark(work: Path, step: str, info: Dict) -> None:
    atomic_write_text(_stamp(work, step), json.dumps(info, indent=1) + "\n")


def read_manifest(tsv: Path) -> List[Tuple[str, int]]:
    """``(absolute wav path, samples)`` of a fairseq manifest."""
    lines = tsv.read_text(encoding="utf-8").splitlines()
    return [(os.path.join(lines[0], p), int(n)) for p, n in (line.split("\t") for line in lines[1:] if line)]


def write_manifest(out: Path, name: str, parts: Sequence[Tuple[Path, str]], root: Path, labels: Sequence[str] = ("ltr", "wrd")) -> int:
    """Concatenate the ``split`` manifests (and label files) of corpora ``(fairseq_dir, split)`` into
    ``out/name.tsv`` with audio paths relative to ``root``; returns the utterance count."""
    rows, lab = [], {k: [] for k in labels}
    for fdir, split in parts:
        rows += [f"{os.path.relpath(p, root)}\t{n}" for p, n in read_manifest(fdir / f"{split}.tsv")]
        for k in labels:
            if (fdir / f"{split}.{k}").is_file():
                lab[k] += (fdir / f"{split}.{k}").read_text(encoding="utf-8").splitlines()
    atomic_write_text(out / f"{name}.tsv", "\n".join([str(root)] + rows) + "\n")
    for k, lines in lab.items():
        if lines:
            require(len(lines) == len(rows), f"{out / name}.{k}: {len(lines)} label lines for {len(rows)} utterances; "
                    "a corpus folder is incomplete: delete it and re-run")
            atomic_write_text(out / f"{name}.{k}", "\n".join(lines) + "\n")
    return len(rows)


def make_data(work: Path, fsdd_dir: str) -> None:
    """Corpora + the manifests of pre-training (``pretrain/``) and fine-tuning / testing (``finetune/``)."""
    if _done(work, "data"):
        return
    corpus = work / "corpus"
    lab = make_corpus.make_synthetic_corpus(corpus / "labelled", jobs=2, **LABELLED)
    pool = make_corpus.make_synthetic_corpus(corpus / "pool", jobs=2, **POOL)
    fsdd = make_corpus.prepare_fsdd(fsdd_dir, corpus / "fsdd", jobs=2)
    L, P, F = corpus / "labelled/fairseq", corpus / "pool/fairseq", corpus / "fsdd/fairseq"
    pre, ft = work / "pretrain", work / "finetune"
    counts = {
        "pretrain_train": write_manifest(pre, "train", [(P, "train"), (L, "train"), (F, "train")], corpus, labels=()),
        "pretrain_valid": write_manifest(pre, "valid", [(L, "valid")], corpus, labels=()),
        "finetune_train": write_manifest(ft, "train", [(L, "train"), (F, "train")], corpus),
        "finetune_valid": write_manifest(ft, "valid", [(L, "valid")], corpus),
        "test_synth": write_manifest(ft, "test_synth", [(L, "test")], corpus),
        "test_fsdd": write_manifest(ft, "test_fsdd", [(F, "test")], corpus),
    }
    from collections import Counter

    chars = Counter(c for line in (ft / "train.ltr").read_text().splitlines() for c in line.split())
    atomic_write_text(ft / "dict.ltr.txt", "".join(f"{c} {n}\n" for c, n in sorted(chars.items(), key=lambda x: (-x[1], x[0]))))
    hours = {k: round(sum(n for _, n in read_manifest(d / f"{s}.tsv")) / 16000 / 3600, 2)
             for k, d, s in (("pretrain_train", pre, "train"), ("finetune_train", ft, "train"), ("test_synth", ft, "test_synth"),
                             ("test_fsdd", ft, "test_fsdd"))}
    _mark(work, "data", {"utterances": counts, "hours": hours, "labelled": LABELLED, "pool": POOL,
                         "synth_counts": {k: v["count"] for k, v in lab["splits"].items()},
                         "pool_counts": {k: v["count"] for k, v in pool["splits"].items()},
                         "fsdd_counts": {k: v["count"] for k, v in fsdd["splits"].items()}})
    log.info("data: %s utterances, %s hours", counts, hours)


def mfcc_features(path: str):
    """39-dim MFCC + deltas + delta-deltas at 100 Hz (Kaldi-compatible, as fairseq's examples/hubert), ``(T, 39)``."""
    import torch
    import torchaudio

    from kd_core.data import load_audio

    wav = load_audio(path)[None]
    with torch.no_grad():
        m = torchaudio.compliance.kaldi.mfcc(wav, sample_frequency=16000, use_energy=False).T  # (13, T)
        d = torchaudio.functional.compute_deltas(m)
        return torch.cat([m, d, torchaudio.functional.compute_deltas(d)]).T.numpy()


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def nearest_centroids(path: str, centres: np.ndarray) -> str:
    """The k-means label line of one utterance: nearest centroid of each 10 ms MFCC frame."""
    f = mfcc_features(path)
    return " ".join(map(str, ((f ** 2).sum(1, keepdims=True) - 2 * f @ centres.T + (centres ** 2).sum(1)).argmin(1)))


def make_kmeans_labels(work: Path, jobs: int = 2, centroids: Optional[Path] = None, k: int = KMEANS_K,
                       share: float = KMEANS_SHARE) -> None:
    """Iteration-1 targets: k-means (``k`` clusters, fitted on ``share`` of the utterances) over MFCC of the
    pre-training pool ``work/pretrain/{train,valid}.tsv`` -> ``{train,valid}.km`` + ``dict.km.txt``.
    ``centroids`` (default: the shipped ``zoo/hubert_mini/kmeans_mfcc_k100.npy``) is read when it exists, so
    a rebuild labels the pool as the shipped model saw it, and written otherwise."""
    if _done(work, "kmeans"):
        return
    from sklearn.cluster import MiniBatchKMeans
    from tqdm import tqdm

    pre = work / "pretrain"
    centroids = centroids or ZOO / "hubert_mini" / f"kmeans_mfcc_k{k}.npy"
    train = read_manifest(pre / "train.tsv")
    if centroids.is_file():
        km_centres = np.load(centroids)
    else:
        rng = np.random.default_rng(0)
        pick = sorted(rng.choice(len(train), max(1, int(len(train) * share)), replace=False))
        feats = np.concatenate([mfcc_features(train[i][0]) for i in tqdm(pick, desc="MFCC for k-means", mininterval=10)])
        km = MiniBatchKMeans(n_clusters=k, init="k-means++", max_iter=100, batch_size=10000, tol=0.0,
                             max_no_improvement=100, n_init=20, reassignment_ratio=0.0, random_state=0, compute_labels=False)
        km.fit(feats)
        km_centres = km.cluster_centers_.astype(np.float32)
        centroids.parent.mkdir(parents=True, exist_ok=True)
        def save(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a path
                np.save(f, km_centres)

        atomic_write(centroids, save)
        log.info("k-means: %d frames, inertia/frame %.2f", len(feats), km.inertia_ / len(feats))
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    for split in ("train", "valid"):
        paths = [p for p, _ in read_manifest(pre / f"{split}.tsv")]
        with ProcessPoolExecutor(jobs, initializer=_one_thread) as ex:
            lines = list(tqdm(ex.map(partial(nearest_centroids, centres=km_centres), paths, chunksize=32), total=len(paths),
                              desc=f"k-means labels {split}", mininterval=10))
        atomic_write_text(pre / f"{split}.km", "\n".join(lines) + "\n")
    atomic_write_text(pre / "dict.km.txt", "".join(f"{i} 1\n" for i in range(len(km_centres))))
    _mark(work, "kmeans", {"K": len(km_centres), "centroids": str(centroids)})


_UPD = re.compile(r'"num_updates": "?(\d+)')


def fairseq_train(config: str, overrides: Sequence[str], save_dir: Path, threads: int, config_dir: Path = CONF) -> None:
    """``fairseq-hydra-train --config-dir conf/fairseq/zoo --config-name config overrides``, resumed from
    ``save_dir/checkpoint_last.pt`` by fairseq itself; a progress bar with ETA follows its json log."""
    from tqdm import tqdm

    import yaml

    total = int(yaml.safe_load((config_dir / f"{config}.yaml").read_text())["optimization"].get("max_update", 0))
    for o in overrides:
        if o.startswith("optimization.max_update="):
            total = int(o.split("=", 1)[1])
    save_dir.mkdir(parents=True, exist_ok=True)
    # the plugin lets torch unpickle the Dictionary in HuBERT checkpoints' task state (resuming; fine-tuning
    # from hubert_mini) and registers kd_hubert_ctc
    cmd = ["fairseq-hydra-train", "--config-dir", str(config_dir), "--config-name", config, f"checkpoint.save_dir={save_dir}",
           f"common.user_dir={ROOT / 'fairseq_kd'}", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log.info("%s", " ".join(cmd))
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    with open(save_dir / "train.log", "a", encoding="utf-8") as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        bar = tqdm(total=total, desc=config, unit="upd", mininterval=30)
        for line in proc.stdout:
            logf.write(line)
            logf.flush()
            m = _UPD.search(line)
            if m and "train_inner" in line:
                n = int(m.group(1))
                if bar.n == 0 and n > 0:
                    bar.reset(total=total)
                    bar.n = n  # resumed: the rate counts this session's updates only
                    bar.start_t = time.time()
                    bar.last_print_n = n
                bar.update(max(0, n - bar.n))
        bar.close()
    if proc.wait() != 0:
        sys.exit(f"build_zoo: error: fairseq-hydra-train failed (exit {proc.returncode}); see {save_dir / 'train.log'}")


def pack(src: Path, dst: Path, model_name: str = "", pretrained: Optional[Path] = None) -> str:
    """Ship ``src`` (a fairseq checkpoint) as ``dst``: fp16 weights, no optimizer state; returns its sha256.
    fairseq's loaders read it as it is (``load_state_dict`` copies fp16 into the fp32 modules it builds).
    ``model_name``: the ``model._name`` to ship under (``kd_hubert_ctc`` runs are fairseq's ``hubert_ctc``);
    ``pretrained``: the checkpoint a fine-tuned model started from, whose config goes into ``model.w2v_args``
    (as in official fine-tuned checkpoints), so the shipped file never needs ``w2v_path``."""
    import torch

    state = torch.load(src, map_location="cpu", weights_only=False)
    state["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    if model_name:  # fairseq saves cfg as plain containers
        state["cfg"]["model"]["_name"] = model_name
    if pretrained is not None:
        state["cfg"]["model"]["w2v_args"] = torch.load(pretrained, map_location="cpu", weights_only=False)["cfg"]
    state["last_optimizer_state"] = None
    atomic_torch_save(state, dst)
    return file_sha256(str(dst))


def _data(work: Path) -> List[str]:
    return data_lines(json.loads(_stamp(work, "data").read_text()), LABELLED, POOL)


def build_hubert_mini(work: Path, threads: int, fsdd_dir: str, more: int = 0) -> None:
    """Pre-train ``hubert_mini`` from random initialisation, or (``more`` > 0) continue the shipped one for ``more``
    updates: fairseq's ``finetune_from_model`` starts from a snapshot of the shipped weights (fresh Adam, warm-up and
    decay over ``more`` updates) on the first launch and resumes from ``checkpoint_last.pt`` after; the run is added
    to ``zoo/hubert_mini/history.json``. This is how pre-training grows across machines (``exp/`` is not kept)."""
    import shutil

    import yaml

    make_data(work, fsdd_dir)
    make_kmeans_labels(work)
    pre, shipped = work / "pretrain", ZOO / "hubert_mini/hubert_mini.pt"
    conf = yaml.safe_load((CONF / "hubert_mini_pretrain.yaml").read_text())
    lr, overrides, start = conf["optimization"]["lr"][0], [f"task.data={pre}", f"task.label_dir={pre}"], None
    updates = conf["optimization"]["max_update"]
    if more:  # keyed by the weights it starts from: a killed run resumes; a finished one changed them, so N more
        require(shipped.is_file(), f"{shipped} not found: --more-updates continues the shipped model; build it first: "
                "python -m tools.build_zoo hubert_mini")
        start, updates = file_sha256(str(shipped)), more
        run, step = work / f"runs/hubert_mini_more_{start[:12]}", f"hubert_mini_more_{start[:12]}"
        snap = run / "start.pt"
        if not snap.is_file():
            run.mkdir(parents=True, exist_ok=True)
            atomic_write(snap, lambda tmp: shutil.copyfile(shipped, tmp))
        # another data order than the runs before (each restarts at epoch 1 of the same pool)
        seed = conf["common"]["seed"] + len(read_history("hubert_mini")["runs"])
        overrides += [f"checkpoint.finetune_from_model={snap}", f"optimization.max_update={more}", f"common.seed={seed}",
                      f"lr_scheduler.warmup_updates={max(1, more * 8 // 100)}",  # 8 % of the run, as the first one
                      "task.min_sample_size=8000"]  # no clip short enough to come out fully masked (see the config)
    else:
        run, step = work / "runs/hubert_mini", "hubert_mini_train"
    if not _done(work, step):
        fairseq_train("hubert_mini_pretrain", overrides, run, threads)
        _mark(work, step, {"save_dir": str(run), "start": start, "updates": updates})
    # the history first: a kill between the two leaves the shipped weights (the key) unchanged, so a re-run only packs
    record_run("hubert_mini", run.name, run / "train.log", start, updates, lr)
    sha = pack(run / "checkpoint_last.pt", shipped)
    write_card("hubert_mini", hubert_mini_card(_data(work), sha))
    log.info("zoo/hubert_mini/hubert_mini.pt sha256 %s", sha)


def build_hubert_mini_ctc(work: Path, threads: int, fsdd_dir: str) -> None:
    """Fine-tune the shipped ``hubert_mini`` for letter CTC, pack, evaluate on the test sets and add the run to
    ``zoo/hubert_mini_ctc/history.json``. The run is keyed by the sha256 of the ``hubert_mini`` it starts from: a killed
    run resumes; after more pre-training the same command fine-tunes the new weights (the old runs stay in the history)."""
    import yaml

    make_data(work, fsdd_dir)
    base = ZOO / "hubert_mini/hubert_mini.pt"
    require(base.is_file(), f"{base} not found; build it first: python -m tools.build_zoo hubert_mini")
    start = file_sha256(str(base))
    run, step, ft = work / f"runs/hubert_mini_ctc_{start[:12]}", f"hubert_mini_ctc_{start[:12]}", work / "finetune"
    if not _done(work, step):
        fairseq_train("hubert_mini_ctc", [f"task.data={ft}", f"task.label_dir={ft}", f"model.w2v_path={base}"], run, threads)
        _mark(work, step, {"save_dir": str(run), "start": start})
    out = ZOO / "hubert_mini_ctc"
    sha = pack(run / "checkpoint_best.pt", out / "hubert_mini_ctc.pt", model_name="hubert_ctc", pretrained=base)
    atomic_write_text(out / "dict.ltr.txt", (ft / "dict.ltr.txt").read_text())
    log.info("zoo/hubert_mini_ctc/hubert_mini_ctc.pt sha256 %s", sha)
    from tools.zoo_eval import evaluate_ctc_teacher

    res = evaluate_ctc_teacher(out / "hubert_mini_ctc.pt", out, {s: ft / f"{s}.tsv" for s in ("test_synth", "test_fsdd", "valid")},
                               threads=threads)
    atomic_write_text(work / f"{step}_eval.json", json.dumps(res, indent=1) + "\n")  # with every hypothesis
    conf = yaml.safe_load((CONF / "hubert_mini_ctc.yaml").read_text())["optimization"]
    record_run("hubert_mini_ctc", run.name, run / "train.log", start, conf["max_update"], conf["lr"][0], curve=CTC_CURVE,
               extra={"pretrain_updates": sum(r["updates"] for r in read_history("hubert_mini")["runs"]),
                      "test": {k: {n: v[n] for n in ("utterances", "wer", "cer")} for k, v in res.items()}})
    render_ctc_card(work)
    log.info("hubert_mini_ctc WER: %s", {k: v["wer"] for k, v in res.items()})


def render_ctc_card(work: Path) -> None:
    """``zoo/hubert_mini_ctc``: card and learning-curve plot from the shipped weights and ``history.json``."""
    from tools.zoo_baseline import plot_curves

    plot_curves(read_history("hubert_mini_ctc"), ZOO / "hubert_mini_ctc/learning_curve.png")
    write_card("hubert_mini_ctc", hubert_mini_ctc_card(_data(work), file_sha256(str(ZOO / "hubert_mini_ctc/hubert_mini_ctc.pt"))))


def build_scratch_baseline(work: Path, threads: int, fsdd_dir: str, max_update: int = 0) -> None:
    """The quality bar's from-scratch student on the labelled set (``tools/zoo_baseline.py``; ``max_update``: stop
    there instead of the config's budget, e.g. to record a run cut short), scored on the test sets and recorded beside
    the teacher's runs; the CTC card is re-rendered when the teacher has a run."""
    from tools.zoo_baseline import SCRATCH_OVERRIDES, record_baseline, score_test_sets

    make_data(work, fsdd_dir)
    ft, run = work / "finetune", work / "runs/scratch_s12"
    fairseq_train("kd_streaming", [f"task.data={ft}", *SCRATCH_OVERRIDES, *([f"optimization.max_update={max_update}"]
                                                                         if max_update else [])],
                  run, threads, config_dir=ROOT / "conf/fairseq")
    hist = record_baseline(run / "train.log", run / "checkpoint_best.pt", score_test_sets(run / "checkpoint_best.pt", ft))
    if hist["runs"]:
        render_ctc_card(work)


def status(work: Path) -> None:
    stamps = sorted(p.stem for p in (work / "stamps").glob("*.json")) if (work / "stamps").is_dir() else []
    print(f"{'done':24s} {', '.join(stamps) or '-'}")
    for run in sorted((work / "runs").glob("*")) if (work / "runs").is_dir() else []:
        lines = (run / "train.log").read_text().splitlines() if (run / "train.log").is_file() else []
        upd = [int(m.group(1)) for m in map(_UPD.search, lines) if m]
        print(f"{run.name:24s} checkpoint_last {'present' if (run / 'checkpoint_last.pt').is_file() else 'absent'}; "
              f"last logged update {upd[-1] if upd else '-'}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=["hubert_mini", "hubert_mini_ctc", "scratch_s12", "data", "status"])
    p.add_argument("--work", default=str(ROOT / "exp/zoo"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--more-updates", type=int, default=0, help="hubert_mini: continue the shipped model for this many "
                   "updates (fresh optimizer; resumable; added to zoo/hubert_mini/history.json)")
    p.add_argument("--max-update", type=int, default=0, help="scratch_s12: stop the baseline at this update instead of "
                   "its config's 12000 (records a run cut short; fairseq resumes, sees the limit and stops)")
    p.add_argument("--fsdd-dir", default=str(ROOT.parent / "shared/data/fsdd"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    work = Path(a.work).resolve()
    if a.model == "status":
        status(work)
    elif a.model == "data":
        make_data(work, a.fsdd_dir)
        make_kmeans_labels(work)
    elif a.model == "hubert_mini":
        build_hubert_mini(work, a.threads, a.fsdd_dir, a.more_updates)
    elif a.model == "scratch_s12":
        build_scratch_baseline(work, a.threads, a.fsdd_dir, a.max_update)
    else:
        build_hubert_mini_ctc(work, a.threads, a.fsdd_dir)


if __name__ == "__main__":
    from kd_core.errors import KDConfigError

    try:
        main()
    except KDConfigError as e:  # bad input (a missing model or file): one line, no traceback
        sys.exit(f"build_zoo: error: {e}")
