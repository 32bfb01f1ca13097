"""ESPnet's own distributed engine on 2 CPU processes (torchrun + ``--dist_backend gloo``): LF-MMI KD (its loss includes
the hidden-layer MSE of layer KD; the L1/cos layer KD path runs through the same ``global_batch_mean`` and is covered
with 2 ranks in tests/fairseq/test_fairseq_ddp.py) trains the student of one process with the same global batch (ESPnet
splits each batch over the ranks); the KD term is averaged over the global batch's frames, so the split does not
matter. One parametrisation keeps the CI cost down (each case is 3 ESPnet processes)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_espnet
from test_espnet_kd_train import CHUNKED

pytestmark = pytest.mark.slow


def _stats(out):
    return torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)["reporter"]["stats"][1]["train"]


@pytest.mark.parametrize("method", ["lfmmi"])
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(espnet_data, tiny_teachers, tmp_path, method):
    if method == "lfmmi":
        tokens = Path(tiny_teachers["espnet"]).parent / "espnet_asr_tiny" / "tokens.txt"
        kd = ["--teacher_type", "espnet", "--teacher_path", tiny_teachers["espnet"], "--teacher_conf",
              f"cachedir={tmp_path}/zoo", "--token_list", tokens, "--kd_loss", "lfmmi", "--kd_loss_conf", "layer_map='2:2'"]
    else:
        kd = ["--teacher_type", "fairseq", "--teacher_path", tiny_teachers["fairseq_hubert"], "--kd_loss_conf",
              "layer_map='1:1,3:2'"]
    args = [*espnet_data["train"], *CHUNKED, *kd, "--max_epoch", "1", "--batch_type", "unsorted", "--batch_size", "4",
            "--optim_conf", "lr=0.0001"]
    run_espnet("espnet2.bin.asr_kd_train", *args, "--output_dir", tmp_path / "one", cwd=espnet_data["root"])
    exe = Path(sys.executable).parent / "torchrun"
    cmd = [str(exe), "--nproc_per_node", "2", "--master_port", str(29610 + (method == "lfmmi")), "-m",
           "espnet2.bin.asr_kd_train", *map(str, args), "--output_dir", str(tmp_path / "two"), "--dist_backend", "gloo",
           "--multiprocessing_distributed", "false"]
    proc = subprocess.run(cmd, cwd=espnet_data["root"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ":0/2]" in proc.stderr, proc.stderr[-1500:]  # ESPnet's log prefix: rank 0 of world size 2
    one, two = _stats(tmp_path / "one"), _stats(tmp_path / "two")
    for key in ("loss", "loss_kd", "loss_asr"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), (key, one[key], two[key])
    a = torch.load(tmp_path / "one" / "1epoch.pth", map_location="cpu")
    b = torch.load(tmp_path / "two" / "1epoch.pth", map_location="cpu")
    assert a.keys() == b.keys() and not any("teacher" in k for k in a)
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert diff < 1e-5, diff  # Adam steps of 1e-4: another global batch moves weights by ~1e-4 per step
