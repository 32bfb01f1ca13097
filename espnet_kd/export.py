"""Export a trained ``asr_kd`` model as a plain ESPnet ASR model (teacher and KD heads dropped).

``python -m espnet_kd.export --config exp/asr_kd/config.yaml --model_file exp/asr_kd/valid.loss.ave.pth --out_dir D``
writes ``D/config.yaml`` + ``D/model.pth``. When the student uses ESPnet's own classes, the config names only
stock classes (``model: espnet``) and stock ``espnet2.bin.asr_inference`` / ``asr_inference_streaming`` and
``espnet2.bin.pack asr`` work without this package; students with ``kd_streaming``/``kd_chunked`` or a transducer
decoder (``model: espnet_kd`` stays: ESPnet's model class needs ``warprnnt_pytorch``) decode with
``espnet2.bin.asr_kd_inference``.
"""
from __future__ import annotations

import argparse
import inspect
import logging
from pathlib import Path
from typing import Tuple

import torch
import yaml

from kd_core.atomic import atomic_torch_save, atomic_write_text
from kd_core.errors import require

logger = logging.getLogger(__name__)

TRAINING_ONLY_PREFIXES = ("kd_loss.",)
OUR_CLASSES = {"frontend": ("kd_streaming",), "encoder": ("kd_chunked",)}


def kd_only_options() -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """``(top-level options, model_conf keys)`` that exist only for KD training, derived from the task: its
    own argument group + ``kd_loss``, and the KD model's arguments that ESPnet's model does not take."""
    from espnet2.asr.espnet_model import ESPnetASRModel

    from .model import ESPnetASRKDModel
    from .task import ASRKDTask

    def args(cls):
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return {k for k, p in inspect.signature(cls.__init__).parameters.items() if p.kind in named and k != "self"}

    return ASRKDTask.kd_options(), tuple(sorted(args(ESPnetASRKDModel) - args(ESPnetASRModel)))


def student_config(config: dict) -> Tuple[dict, bool]:
    """KD training config -> (student config, True if it names only stock ESPnet classes)."""
    options, model_conf = kd_only_options()
    cfg = {k: v for k, v in config.items() if k not in options}
    transducer = cfg.get("decoder") == "transducer"  # ESPnet's model would need warprnnt_pytorch: keep ours
    if cfg.get("model") in (None, "espnet_kd") and not transducer:
        cfg["model"] = "espnet"
    cfg["model_conf"] = {k: v for k, v in (cfg.get("model_conf") or {}).items() if k not in model_conf}
    if transducer:  # still model espnet_kd: a plain model without teacher
        cfg["model_conf"]["kd_weight"] = 0.0
    stock = all(cfg.get(name) not in ours for name, ours in OUR_CLASSES.items()) and not transducer
    return cfg, stock


def export_student(config: str, model_file: str, out_dir: str) -> Tuple[Path, Path, bool]:
    """Write ``out_dir/config.yaml`` and ``out_dir/model.pth``; returns their paths and the stock flag."""
    config, model_file, out = Path(config), Path(model_file), Path(out_dir)
    require(config.is_file(), f"--config {config}: no such file; give the training run's config.yaml")
    require(model_file.is_file(), f"--model_file {model_file}: no such file; give a trained checkpoint (e.g. valid.loss.ave.pth)")
    with config.open(encoding="utf-8") as f:
        cfg, stock = student_config(yaml.safe_load(f))
    state = torch.load(model_file, map_location="cpu", weights_only=False)
    state = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state, out / "model.pth")

    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False))
    logger.info("exported student to %s (%s)", out, "stock ESPnet classes" if stock else "needs espnet_kd to decode")
    return out / "config.yaml", out / "model.pth", stock


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--model_file", required=True)
    p.add_argument("--out_dir", required=True)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    export_student(a.config, a.model_file, a.out_dir)


if __name__ == "__main__":
    main()
