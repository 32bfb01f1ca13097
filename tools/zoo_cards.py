"""Model cards of the zoo and the training history they are written from.

A zoo model's history (``zoo/<name>/history.json``, committed beside it) lists every training run that made the
shipped weights: its start (``null``: random initialisation, else the sha256 of the weights it continued from),
updates, learning rate, CPU hours and valid learning curve. It survives machines: ``exp/`` does not, so a run that
continues a shipped model on a new machine (``python -m tools.build_zoo hubert_mini --more-updates N``) appends to the
history instead of losing what came before, and the card counts every update and CPU hour.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from kd_core.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"


def learning_curve(log: Path, keys: Sequence[str]) -> List[Dict[str, str]]:
    """fairseq's ``[valid]`` json lines of ``log``: update + the named values, one dict per validation."""
    rows = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if "][valid][" in line:
            rec = json.loads(line[line.index("{"):])
            rows.append({"update": rec.get("valid_num_updates", "?"), **{k: rec.get(f"valid_{k}", "?") for k in keys}})
    return rows


def train_hours(log: Path) -> float:
    """Training wall time in hours: the sum of fairseq's per-interval ``train_wall`` over every (re)start."""
    total = 0.0
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if "][train_inner][" in line:
            total += float(json.loads(line[line.index("{"):]).get("train_wall", 0))
    return total / 3600


def read_history(name: str) -> Dict:
    path = ZOO / name / "history.json"
    return json.loads(path.read_text()) if path.is_file() else {"runs": [], "notes": []}


#: the valid values a history keeps per model kind: card name -> fairseq ``valid_<key>``
PRETRAIN_CURVE = {"loss": "loss", "accuracy": "correct_m_0"}
CTC_CURVE = {"loss": "loss", "uer": "uer", "wer": "wer"}


def record_run(name: str, run: str, log: Path, start: Optional[str], updates: int, lr: float,
               curve: Dict[str, str] = PRETRAIN_CURVE, extra: Optional[Dict] = None) -> Dict:
    """Add (or replace: same ``run`` and ``start``) the record of a finished fairseq run to ``zoo/<name>/history.json``
    (its valid ``curve`` values and any ``extra`` fields); a run from random initialisation (``start`` None) replaces
    every run before it. The newest record comes last: it made the shipped weights. Returns the history."""
    hist = read_history(name)
    points = [{"update": int(r["update"]), **{k: float(r[v]) for k, v in curve.items()}}
              for r in learning_curve(log, list(curve.values())) if "?" not in r.values()]
    rec = {"run": run, "start": start, "updates": updates, "lr": lr, "cpu_hours": round(train_hours(log), 2),
           **(extra or {}), "curve": points}
    runs = [] if start is None else [r for r in hist["runs"] if (r["run"], r["start"]) != (run, start)]
    return write_history(name, {**hist, "runs": runs + [rec]})


def write_history(name: str, hist: Dict) -> Dict:
    atomic_write_text(ZOO / name / "history.json", json.dumps(hist, indent=1) + "\n")
    return hist


def write_card(name: str, text: str) -> None:
    atomic_write_text(ZOO / name / "CARD.md", text)


def data_lines(data: Dict, labelled: Dict, pool: Dict) -> List[str]:
    """The card's data section from the ``data`` stamp of ``tools.build_zoo`` and its corpus settings."""
    h, n = data["hours"], data["utterances"]
    return [f"- Unlabelled pool (pre-training): {n['pretrain_train']} utterances, {h['pretrain_train']} h = synthetic pool "
            f"(espeak-ng + sox, {pool['num_train']} utterances, any WordNet example sentence except held-out ones, 24 "
            f"training voices, white noise at {pool['noise_snr_db'].replace(':', '-')} dB SNR, sox reverberation on about half, speed "
            f"perturbation 0.9/1.0/1.1) + the labelled set's audio + FSDD train (CC BY-SA 4.0).",
            f"- Labelled set (fine-tuning): {n['finetune_train']} utterances, {h['finetune_train']} h = {labelled['num_train']} "
            f"synthetic utterances (closed {labelled['vocab_size']}-word WordNet vocabulary, seed {labelled['seed']}) + FSDD "
            f"train (2,700 real recordings, 6 speakers, ten digits).",
            f"- Model selection: {n['finetune_valid']} synthetic utterances of training voices (held-out sentences).",
            f"- Test sets, never used for training or selection: `test_synth` {n['test_synth']} utterances of 9 voices whose "
            f"accent and variant training never uses, held-out sentences; `test_fsdd` {n['test_fsdd']} FSDD test recordings "
            "(official split, seen speakers).",
            "- Rebuild the data alone: `python -m tools.build_zoo data` (deterministic by seed)."]


def hubert_mini_card(data: List[str], sha: str) -> str:
    """``zoo/hubert_mini/CARD.md`` from the shipped weights and ``history.json`` (every run, cumulative updates)."""
    import torch

    state = torch.load(ZOO / "hubert_mini/hubert_mini.pt", map_location="cpu", weights_only=False)
    params = sum(v.numel() for v in state["model"].values())
    hist = read_history("hubert_mini")
    runs, total = [], 0
    for r in hist["runs"]:
        runs.append((total, r))
        total += r["updates"]
    hours = sum(r["cpu_hours"] for r in hist["runs"])
    lines = ["# hubert_mini", "",
             "HuBERT Base scaled down, pre-trained (iteration 1) with fairseq's own `hubert_pretraining` task and `hubert`",
             "criterion through `fairseq-hydra-train` (`conf/fairseq/zoo/hubert_mini_pretrain.yaml`). Keeps the pre-training",
             "head: `final_proj` (320 -> 128) and the codebook `label_embs_concat` (100 k-means classes + 4 specials), which the",
             "HuBERT discriminative loss reads. Not a recogniser: `hubert_mini_ctc` is its CTC fine-tuning.", "",
             "| | |", "|---|---|",
             "| shape | 7-layer waveform CNN (128 channels, 20 ms frames), 8 x 320 post-LN transformer, FFN 1280, 5 heads |",
             f"| parameters | {params / 1e6:.2f}M (with the pre-training head) |",
             "| targets | k-means (K = 100, scikit-learn MiniBatchKMeans) over 39-dim MFCC (+ deltas) at 100 Hz of a 10 % "
             "sample of the pool; centroids `kmeans_mfcc_k100.npy` |",
             f"| updates | {total} (20 s of audio each; runs below) |",
             f"| CPU time | {hours:.2f} h on one thread |",
             "| storage | fp16 weights, no optimizer state |",
             f"| sha256 | `{sha}` |",
             "| command | `python -m tools.build_zoo hubert_mini` (then `--more-updates N` per continuation) |", "",
             "## Runs (`history.json`)", "", "| run | updates | from | lr | CPU hours |", "|---|---|---|---|---|"] + [
             f"| {r['run']} | {r['updates']} | {'random initialisation' if r['start'] is None else 'update ' + str(off) + ' (sha256 `' + r['start'][:12] + '...`), fresh Adam and warm-up'} "
             f"| {r['lr']:g} | {r['cpu_hours']:.2f} |" for off, r in runs] + [
             "", "## Data", ""] + data + [
             "", "## Learning curve (valid: masked-prediction loss in bits, accuracy; updates counted over all runs)", "",
             "| update | loss | accuracy |", "|---|---|---|"] + [
             f"| {off + c['update']} | {c['loss']:g} | {c['accuracy']:g} |" for off, r in runs for c in r["curve"]] + [
             "", "K = 100: HuBERT's own iteration-1 choice, roughly 40 English phones x a few acoustic states; a larger K",
             "would leave many clusters with few frames in a 13 h pool. No second iteration (k-means on its own",
             "features): the CPU budget went to the first.", ""]
    if hist["notes"]:
        lines += ["## What did not work", ""] + [n for note in hist["notes"] for n in (note, "")]
    return "\n".join(lines)


def hubert_mini_ctc_card(data: List[str], sha: str) -> str:
    """``zoo/hubert_mini_ctc/CARD.md`` from the shipped weights and ``history.json``: every fine-tuning run (the last
    one made the shipped weights), its test WERs and the quality bar against the from-scratch baseline."""
    import torch

    from tools.zoo_baseline import bar_lines

    state = torch.load(ZOO / "hubert_mini_ctc/hubert_mini_ctc.pt", map_location="cpu", weights_only=False)
    params = sum(v.numel() for v in state["model"].values())
    cfg = state["cfg"]
    hist = read_history("hubert_mini_ctc")
    runs = hist["runs"]
    shipped = runs[-1]
    sets = list(shipped["test"])
    lines = ["# hubert_mini_ctc", "",
             "`hubert_mini` fine-tuned for character CTC with fairseq's own path: `hubert_pretraining` task in fine-tuning",
             "mode, fairseq's `HubertCtc` (registered buildable as `kd_hubert_ctc`: fairseq issue #4916) and the `ctc`",
             "criterion (`conf/fairseq/zoo/hubert_mini_ctc.yaml`); shipped under fairseq's own name `hubert_ctc` with the",
             "pre-training config in `w2v_args` (self-contained), fp16, no optimizer state. `dict.ltr.txt` is its output",
             "alphabet (after fairseq's 4 specials; blank = `<s>`).", "",
             "| | |", "|---|---|",
             f"| parameters | {params / 1e6:.2f}M |",
             f"| fine-tuned from | `hubert_mini` after {shipped['pretrain_updates']} pre-training updates (sha256 "
             f"`{shipped['start'][:12]}...`) |",
             f"| updates | {cfg['optimization']['max_update']} (20 s of audio each, lr {cfg['optimization']['lr'][0]}, tri-stage; "
             f"encoder frozen for the first {cfg['model']['freeze_finetune_updates']}) |",
             f"| CPU time | {shipped['cpu_hours']:.2f} h on one thread |",
             "| selected | best valid WER (`checkpoint_best.pt`) |",
             f"| sha256 | `{sha}` |",
             "| command | `python -m tools.build_zoo hubert_mini_ctc` |", "",
             "## WER (greedy CTC, `tools/zoo_eval.py` through `load_teacher(\"fairseq\", ...)`, jiwer)", "",
             "| set | utterances | WER % | CER % |", "|---|---|---|---|"] + [
             f"| {k} | {v['utterances']} | {v['wer']} | {v['cer']} |" for k, v in shipped["test"].items()] + [
             "", "## Fine-tuning runs (`history.json`; the last one is shipped)", "",
             "| run | from hubert_mini at | updates | CPU hours | best valid WER % (its UER) | " + " | ".join(
                 f"{k} WER %" for k in sets) + " |", "|---" * (5 + len(sets)) + "|"] + [
             f"| {r['run']} | update {r['pretrain_updates']} | {r['updates']} | {r['cpu_hours']:.2f} | "
             f"{min(r['curve'], key=lambda c: c['wer'])['wer']:.1f} ({min(r['curve'], key=lambda c: c['wer'])['uer']:.1f}) | "
             + " | ".join(f"{r['test'][k]['wer']}" for k in sets) + " |" for r in runs] + [
             "", "## Data", ""] + data + [
             "", "## Quality bar: against the best from-scratch student of at most 1/12 the parameters", ""] + bar_lines(
             hist, params / 1e6) + [
             "", "![valid UER and WER of every fine-tuning and the scratch student](learning_curve.png)", "",
             "## Learning curve of the shipped run (valid, fairseq's own greedy decoding)", "",
             "| update | loss | UER % | WER % |", "|---|---|---|---|"] + [
             f"| {c['update']} | {c['loss']:g} | {c['uer']:g} | {c['wer']:g} |" for c in shipped["curve"]] + [""]
    if hist["notes"]:
        lines += ["## Also tried (not shipped)", ""] + [n for note in hist["notes"] for n in (note, "")]
    return "\n".join(lines)
