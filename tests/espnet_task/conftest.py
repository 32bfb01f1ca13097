"""A tiny ESPnet data setup (synthetic corpus, char tokens, shape files from the real collect-stats run)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_espnet(module, *args, cwd, check=True, env_extra=None):
    """``python -m <module> args`` in a fresh process; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def espnet_data(tmp_path_factory):
    """``{root, common_args, train_args}``: dump dirs, a char token list and ESPnet shape files."""
    from tools.make_corpus import make_synthetic_corpus

    root = tmp_path_factory.mktemp("espnet_data")
    make_synthetic_corpus(root / "corpus", seed=3, num_train=12, num_valid=4, num_test=4, jobs=2)
    texts = []
    for split in ("train", "valid", "test"):
        d = root / "dump" / split
        d.mkdir(parents=True)
        for name in ("wav.scp", "text"):
            (d / name).write_text((root / "corpus" / "kaldi" / split / name).read_text())
        texts += [line.split(" ", 1)[1] for line in (d / "text").read_text().splitlines()]
    chars = sorted({c for t in texts for c in t.replace(" ", "")})
    tokens = root / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>", "<space>"] + chars + ["<sos/eos>"]) + "\n")
    common = ["--use_preprocessor", "true", "--token_type", "char", "--token_list", tokens, "--cleaner", "none",
              "--g2p", "none", "--ngpu", "0", "--num_workers", "0", "--seed", "0"]
    data = []
    for split in ("train", "valid"):
        data += [f"--{split}_data_path_and_name_and_type", f"{root}/dump/{split}/wav.scp,speech,sound",
                 f"--{split}_data_path_and_name_and_type", f"{root}/dump/{split}/text,text,text"]
    stats = root / "stats"
    run_espnet("espnet2.bin.asr_kd_train", "--collect_stats", "true", *common, *data, "--frontend", "kd_streaming",
               "--encoder", "kd_chunked", "--normalize", "none", "--decoder", "none", "--model_conf", "ctc_weight=1.0",
               "--train_shape_file", f"{root}/dump/train/wav.scp", "--valid_shape_file", f"{root}/dump/valid/wav.scp",
               "--output_dir", stats, cwd=root)
    shapes = []
    for split in ("train", "valid"):
        shapes += [f"--{split}_shape_file", f"{stats}/{split}/speech_shape", f"--{split}_shape_file", f"{stats}/{split}/text_shape"]
    train = [*common, *data, *shapes, "--batch_type", "folded", "--batch_size", "4", "--fold_length", "80000",
             "--fold_length", "150", "--optim", "adam", "--optim_conf", "lr=0.001", "--use_tensorboard", "false",
             "--keep_nbest_models", "1", "--best_model_criterion", "valid,loss,min"]
    return {"root": root, "common": common, "train": train}
