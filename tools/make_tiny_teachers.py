#!/usr/bin/env python
"""Write tiny, randomly initialised *real* teachers, offline, with the toolkits' own code.

- ``fairseq_hubert_tiny.pt``: fairseq ``HubertModel`` (group-norm CNN, like HuBERT Base), task
  ``hubert_pretraining`` with ``fairseq_labels/dict.km.txt``;
- ``fairseq_w2v2_tiny.pt``: fairseq ``Wav2Vec2Model`` (layer-norm CNN, ``normalize=True``, like
  wav2vec2 Large);
- ``fairseq_w2v2_ctc_tiny.pt``: fairseq ``Wav2VecCtc`` fine-tuned head on top of it, task
  ``audio_finetuning`` with a letter dictionary ``fairseq_labels/dict.ltr.txt``;
- ``espnet_asr_tiny.zip``: an ESPnet conformer CTC ASR model packed with ``espnet2.bin.pack``.
All fairseq checkpoints are written with ``fairseq.checkpoint_utils.torch_persistent_save``
and load back with fairseq's ``load_model_ensemble_and_task``.

Usage: ``python tools/make_tiny_teachers.py --out exp/teachers [--seed 0]``
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from typing import Dict

import torch

LETTERS = list("|EAOTNIHSRDLUMWCFGYPBVK'XJQZ")
# 20 ms frames like the real models (stride 5*2*2*2*2*2*2 = 320), 32-channel CNN.
CONV = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2"
TINY = dict(encoder_layers=3, encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_attention_heads=4,
            conv_feature_layers=CONV, conv_pos=16, conv_pos_groups=4, final_dim=32, encoder_layerdrop=0.05)


def _save_fairseq(path: Path, cfg, model) -> None:
    from fairseq import checkpoint_utils
    from omegaconf import OmegaConf

    state = {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [{"criterion_name": "none", "optimizer_name": "none", "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {},
        "extra_state": {"train_iterator": {"epoch": 1}},
        "last_optimizer_state": None,
    }
    checkpoint_utils.torch_persistent_save(state, str(path))


def _fairseq_cfg(task_name: str, task_cfg, model_name: str, model_cfg):
    """A full FairseqConfig with the registry names set (as fairseq-hydra-train would write it)."""
    from fairseq.dataclass.configs import FairseqConfig
    from omegaconf import OmegaConf, open_dict

    cfg = OmegaConf.structured(FairseqConfig())
    with open_dict(cfg):
        cfg.task = OmegaConf.structured(task_cfg)
        cfg.model = OmegaConf.structured(model_cfg)
        cfg.task._name, cfg.model._name = task_name, model_name
    return cfg


def make_fairseq_hubert(out: Path, labels: Path) -> Path:
    from fairseq.models.hubert.hubert import HubertConfig
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig, HubertPretrainingTask

    (labels / "dict.km.txt").write_text("".join(f"{i} 1\n" for i in range(20)))
    cfg = _fairseq_cfg("hubert_pretraining", HubertPretrainingConfig(data=str(labels), labels=["km"], label_dir=str(labels), label_rate=50.0),
                       "hubert", HubertConfig(label_rate=50.0, extractor_mode="default", **TINY))
    task = HubertPretrainingTask.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    path = out / "fairseq_hubert_tiny.pt"
    _save_fairseq(path, cfg, model)
    return path


def make_fairseq_w2v2(out: Path, labels: Path) -> Dict[str, Path]:
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config
    from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig
    from fairseq.tasks.audio_finetuning import AudioFinetuningConfig
    from fairseq.tasks.audio_pretraining import AudioPretrainingConfig, AudioPretrainingTask

    cfg = _fairseq_cfg("audio_pretraining", AudioPretrainingConfig(data=str(labels), normalize=True),
                       "wav2vec2", Wav2Vec2Config(extractor_mode="layer_norm", layer_norm_first=True, latent_vars=16, latent_dim=32,
                                      quantize_targets=True, **TINY))
    task = AudioPretrainingTask.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    pre = out / "fairseq_w2v2_tiny.pt"
    _save_fairseq(pre, cfg, model)

    (labels / "dict.ltr.txt").write_text("".join(f"{c} 1\n" for c in LETTERS))
    from fairseq.tasks.audio_finetuning import AudioFinetuningTask

    ft_cfg = _fairseq_cfg("audio_finetuning", AudioFinetuningConfig(data=str(labels), labels="ltr", normalize=True),
                          "wav2vec_ctc", Wav2Vec2CtcConfig(w2v_path=str(pre), normalize=True, layerdrop=0.05))
    ft_task = AudioFinetuningTask.setup_task(ft_cfg.task)
    ctc = ft_task.build_model(ft_cfg.model)  # loads the pretrained weights from w2v_path, stores w2v_args
    with torch.no_grad():
        ctc.w2v_encoder.proj.weight.normal_(0, 0.5)
    ctc_path = out / "fairseq_w2v2_ctc_tiny.pt"
    _save_fairseq(ctc_path, ft_cfg, ctc)
    return {"fairseq_w2v2": pre, "fairseq_w2v2_ctc": ctc_path}


def make_espnet_tiny(out: Path, seed: int = 0) -> Path:
    """Conformer CTC ASR model built by ESPnet's ``ASRTask``, packed with ``espnet2.bin.pack``."""
    from espnet2.tasks.asr import ASRTask
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    d = out / "espnet_asr_tiny"
    d.mkdir(parents=True, exist_ok=True)
    tokens = d / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>"] + [c if c != "|" else "<space>" for c in LETTERS] + ["<sos/eos>"]) + "\n")
    args = ASRTask.get_parser().parse_args([
        "--token_list", str(tokens), "--token_type", "char", "--output_dir", str(d),
        "--frontend_conf", "n_fft=400", "--frontend_conf", "hop_length=160", "--frontend_conf", "n_mels=40",
        "--normalize", "utterance_mvn", "--encoder", "conformer",
        "--encoder_conf", "output_size=64", "--encoder_conf", "attention_heads=4", "--encoder_conf", "linear_units=128",
        "--encoder_conf", "num_blocks=2", "--encoder_conf", "cnn_module_kernel=7", "--encoder_conf", "input_layer=conv2d",
        "--encoder_conf", "rel_pos_type=latest",  # conformer default "legacy" is deprecated
        "--decoder", "none", "--model_conf", "ctc_weight=1.0", "--use_preprocessor", "true",
    ])
    torch.manual_seed(seed)
    model = ASRTask.build_model(args)
    config = d / "config.yaml"
    with open(config, "w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)  # what AbsTask.main writes
    weights = d / "valid.acc.ave.pth"
    torch.save(model.state_dict(), weights)
    zip_path = out / "espnet_asr_tiny.zip"
    proc = subprocess.run([sys.executable, "-m", "espnet2.bin.pack", "asr", "--asr_train_config", str(config),
                           "--asr_model_file", str(weights), "--outpath", str(zip_path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=out)
    if proc.returncode != 0:
        raise RuntimeError(f"espnet2.bin.pack failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return zip_path


def make_tiny_teachers(out_dir, seed: int = 0, espnet: bool = True) -> Dict[str, Path]:
    """Write all tiny teachers into ``out_dir``; returns ``{name: path}``."""
    out = Path(out_dir)
    labels = out / "fairseq_labels"
    labels.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    paths = {"fairseq_hubert": make_fairseq_hubert(out, labels)}
    paths.update(make_fairseq_w2v2(out, labels))
    if espnet:
        paths["espnet"] = make_espnet_tiny(out, seed)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    for name, path in make_tiny_teachers(a.out, a.seed).items():
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
