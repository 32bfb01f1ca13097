#!/usr/bin/env python
"""End-to-end demo on the embedded default: synthetic corpus -> teacher -> streaming student -> report.

Pure-torch pipeline over the core (the ESPnet recipe replaces it once the ESPnet task lands):
1. synthesise a corpus with espeak-ng + sox (train/valid voices, unseen test voices) and
   prepare FSDD's official test split (real speech, resampled to 16 kHz);
2. train a small non-streaming wav2vec2-architecture teacher (torchaudio) with CTC;
3. distil it into a streaming student (chunk 480 ms) with layer-to-layer KD + CTC, and train
   the same student from scratch with the same data, steps and optimiser;
4. report WER (jiwer), parameters, CPU real-time factor, algorithmic latency; plot curves.
Each stage writes its result atomically and is skipped when present (``--force`` redoes).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_corpus import make_synthetic_corpus, prepare_fsdd  # noqa: E402

from kd_core.atomic import atomic_torch_save  # noqa: E402
from kd_core.data import CharTokenizer, greedy_ctc, load_kaldi_audio, pad_batch  # noqa: E402
from kd_core.distiller import Distiller, ctc_loss_sum  # noqa: E402
from kd_core.streaming import algorithmic_latency_ms, ms_to_frames  # noqa: E402
from kd_core.students import student_tiny  # noqa: E402
from kd_core.teachers.torchaudio_teacher import TorchaudioTeacher  # noqa: E402

log = logging.getLogger("demo")


def load_split(data_dir: Path):
    return load_kaldi_audio(str(data_dir))


def batches(data, batch_size: int, rng: random.Random):
    order = sorted(range(len(data)), key=lambda i: data[i][1].numel())
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    while True:
        rng.shuffle(groups)
        yield from groups


def make_teacher(vocab: int):
    """~2.8M-parameter wav2vec2 (torchaudio factory), layer-norm CNN front-end, 20 ms frames."""
    from torchaudio.models import wav2vec2_model

    conf = dict(extractor_mode="layer_norm", extractor_conv_layer_config=[(64, 10, 5)] + [(64, 3, 2)] * 3 + [(64, 2, 2)] * 2,
                extractor_conv_bias=False, encoder_embed_dim=192, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=32,
                encoder_pos_conv_groups=8, encoder_num_layers=6, encoder_num_heads=4, encoder_attention_dropout=0.0,
                encoder_ff_interm_features=768, encoder_ff_interm_dropout=0.0, encoder_dropout=0.1,
                encoder_layer_norm_first=True, encoder_layer_drop=0.0, aux_num_out=vocab)
    return wav2vec2_model(**conf), conf


def train(step_fn, params, data, steps: int, batch_size: int, lr: float, seed: int, desc: str):
    from tqdm import tqdm

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    it, curve = batches(data, batch_size, random.Random(seed)), []
    bar = tqdm(range(steps), desc=desc, mininterval=5, file=sys.stderr)
    for step in bar:
        idx = next(it)
        loss, stats = step_fn([data[i] for i in idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
        curve.append(stats)
        if step % 20 == 0:
            bar.set_postfix({k: f"{v:.3g}" for k, v in stats.items() if k in ("ctc", "kd_layer")}, refresh=False)
    return curve


def targets(texts, tok):
    ids = [torch.tensor(tok.encode(t)) for t in texts]
    return torch.nn.utils.rnn.pad_sequence(ids, batch_first=True), torch.tensor([len(i) for i in ids])


@torch.no_grad()
def evaluate(forward_logits, data, tok, batch_size=8):
    import jiwer

    hyps, refs, audio_s, compute_s = [], [], 0.0, 0.0
    for i in range(0, len(data), batch_size):
        chunk = data[i : i + batch_size]
        for _, w, text in chunk:  # one utterance at a time, 1 thread: the RTF of a real decoder
            t0 = time.perf_counter()
            logits, lens = forward_logits(w[None], torch.tensor([w.numel()]))
            compute_s += time.perf_counter() - t0
            audio_s += w.numel() / 16000
            hyps.append(tok.decode(greedy_ctc(logits, lens)[0]))
            refs.append(text)
    return {"wer": 100 * jiwer.wer(refs, hyps), "cer": 100 * jiwer.cer(refs, hyps), "rtf": compute_s / audio_s,
            "examples": list(zip(refs[:3], hyps[:3]))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="exp/demo")
    p.add_argument("--fsdd-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/fsdd"))
    p.add_argument("--quick", action="store_true", help="CI size: tiny corpus and few steps (checks plumbing, not accuracy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-ms", type=float, default=480.0)
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.manual_seed(a.seed)
    torch.set_num_threads(2)
    n_train, t_steps, s_steps, n_fsdd = (60, 40, 40, 20) if a.quick else (600, 1500, 1500, 100)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.force:
        for f in out.glob("*.pt"):
            f.unlink()

    # 1. data
    if not (out / "data/kaldi/test/wav.scp").exists():
        make_synthetic_corpus(out / "data", seed=a.seed, num_train=n_train, num_valid=max(10, n_train // 10), num_test=max(10, n_train // 10))
    fsdd_ok = Path(a.fsdd_dir, "recordings").is_dir()
    if fsdd_ok and not (out / "fsdd/kaldi/test/wav.scp").exists():
        prepare_fsdd(a.fsdd_dir, out / "fsdd", max_per_split=n_fsdd)
    train_set, test_set = load_split(out / "data/kaldi/train"), load_split(out / "data/kaldi/test")
    fsdd_test = load_split(out / "fsdd/kaldi/test") if fsdd_ok else []
    tok = CharTokenizer.from_texts([t for _, _, t in train_set])
    bs = 8

    # 2. teacher (non-streaming, CTC)
    tpath = out / "teacher.pt"
    model, tconf = make_teacher(len(tok))
    if tpath.exists():
        model.load_state_dict(torch.load(tpath)["state_dict"])
        tcurve = torch.load(tpath)["curve"]
    else:
        def t_step(batch):
            wav, wl = pad_batch([w for _, w, _ in batch])
            y, yl = targets([t for _, _, t in batch], tok)
            logits, ol = model(wav, wl)
            s, d = ctc_loss_sum(logits, ol, y, yl)
            return s / d, {"ctc": (s / d).item()}
        model.train()
        tcurve = train(t_step, list(model.parameters()), train_set, t_steps, bs, 2e-3, a.seed, "teacher")
        atomic_torch_save({"config": tconf, "state_dict": model.state_dict(), "tokens": tok.symbols, "curve": tcurve}, tpath)
    teacher = TorchaudioTeacher(model).freeze()

    # 3. students: KD vs scratch, same steps/optimiser/data order
    chunk = ms_to_frames(a.chunk_ms, 40.0)
    results = {}
    for name, kd_w in (("student_kd", 1.0), ("student_scratch", 0.0)):
        spath = out / f"{name}.pt"
        torch.manual_seed(a.seed)
        student = student_tiny(d_model=96, num_layers=3, ffn_dim=256, chunk_size=chunk, vocab_size=len(tok), dropout=0.1)
        dist = Distiller(teacher, student, layer_map=f"{teacher.num_layers // 3}:1,{2 * teacher.num_layers // 3}:2,{teacher.num_layers}:3",
                         kd_weight=kd_w, ctc_weight=1.0)
        if spath.exists():
            ck = torch.load(spath)
            dist.load_state_dict(ck["state_dict"], strict=False)
            curve = ck["curve"]
        else:
            def s_step(batch):
                wav, wl = pad_batch([w for _, w, _ in batch])
                y, yl = targets([t for _, _, t in batch], tok)
                s, d, st = dist(wav, wl, y, yl)
                return s / d, st
            dist.train()
            params = [q for q in dist.parameters() if q.requires_grad]
            curve = train(s_step, params, train_set, s_steps, bs, 2e-3, a.seed, name)
            atomic_torch_save({"state_dict": dist.trainable_state_dict(), "curve": curve}, spath)
        student.eval()
        results[name] = (student, curve)

    # 4. report
    torch.set_num_threads(1)
    rows = []
    def t_fwd(w, l):
        return model(w, l)
    evals = {"teacher (non-streaming)": (t_fwd, model, math.inf)}
    for name, (student, _) in results.items():
        fwd = (lambda s: (lambda w, l: (lambda o: (o.logits, o.lengths))(s(w, l))))(student)
        lat = algorithmic_latency_ms(chunk, student.frame_shift_ms, 0, student.frontend_lookahead_ms)
        evals[f"{name} ({a.chunk_ms:.0f} ms chunk)"] = (fwd, student, lat)
    for label, (fwd, m, lat) in evals.items():
        m.eval()
        syn = evaluate(fwd, test_set, tok)
        real = evaluate(fwd, fsdd_test, tok) if fsdd_test else {"wer": float("nan")}
        rows.append({"model": label, "params_M": sum(q.numel() for q in m.parameters()) / 1e6, "latency_ms": lat,
                     "wer_synth_test": syn["wer"], "cer_synth_test": syn["cer"], "wer_fsdd_test": real["wer"],
                     "rtf_1thread": syn["rtf"], "examples": syn["examples"]})
    write_report(out, rows, tcurve, {k: v[1] for k, v in results.items()}, a)
    return rows


def write_report(out: Path, rows, tcurve, curves, a):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_rtf = rows[0]["rtf_1thread"]
    lines = ["# Demo report", "", f"Command: `python tools/demo.py{' --quick' if a.quick else ''}` (seed {a.seed}); "
             "synthetic test voices are unseen in training; FSDD = real speech (CC BY-SA 4.0), official test split subset.", "",
             "| model | params (M) | size ratio | latency (ms) | WER synth test | CER synth test | WER FSDD test | RTF (1 thread) | speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params_M']:.2f} | {rows[0]['params_M'] / r['params_M']:.1f}x | {r['latency_ms']:.0f} | "
                     f"{r['wer_synth_test']:.1f} | {r['cer_synth_test']:.1f} | {r['wer_fsdd_test']:.1f} | {r['rtf_1thread']:.4f} | {t_rtf / r['rtf_1thread']:.1f}x |")
    lines += ["", "Examples (reference -> hypothesis):"] + [f"- {r['model']}: " + "; ".join(f"`{x}` -> `{y}`" for x, y in r["examples"][:2]) for r in rows]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot([s["ctc"] for s in tcurve], label="teacher")
    for name, c in curves.items():
        ax[0].plot([s.get("ctc", float("nan")) for s in c], label=name)
        if "kd_layer" in c[0] and any(s.get("kd_layer") for s in c):
            ax[1].plot([s["kd_layer"] for s in c], label=name)
    ax[0].set(title="CTC loss", xlabel="step", yscale="log")
    ax[1].set(title="layer KD loss (sum over mapped layers)", xlabel="step")
    for x in ax:
        x.legend()
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=100)
    log.info("report: %s", out / "report.md")
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
