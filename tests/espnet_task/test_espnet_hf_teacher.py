"""ESPnet: a Hugging Face teacher (`--teacher_type huggingface`) distils like the fairseq checkpoint it
was converted from: the same KD losses, epoch for epoch."""
import pytest
import torch
from conftest import run_espnet

pytestmark = pytest.mark.slow

CHUNKED = ["--frontend", "kd_streaming", "--frontend_conf", "n_mels=40", "--frontend_conf", "channels=8",
           "--normalize", "none", "--encoder", "kd_chunked", "--encoder_conf", "d_model=32", "--encoder_conf", "num_layers=2",
           "--encoder_conf", "ffn_dim=64", "--encoder_conf", "chunk_size=4", "--encoder_conf", "dropout=0.0",
           "--decoder", "none", "--model_conf", "ctc_weight=1.0", "--kd_loss_conf", "layer_map='1:1,3:2'", "--max_epoch", "1"]


def test_hf_teacher_gives_the_fairseq_teachers_losses(espnet_data, tiny_teachers, tmp_path):
    from kd_core.teachers.hf_convert import convert_fairseq_to_hf

    hf = convert_fairseq_to_hf(str(tiny_teachers["fairseq_hubert"]), str(tmp_path / "hf"))
    stats = {}
    for kind, path in (("fairseq", tiny_teachers["fairseq_hubert"]), ("huggingface", hf)):
        out = tmp_path / kind
        run_espnet("espnet2.bin.asr_kd_train", *espnet_data["train"], *CHUNKED, "--teacher_type", kind, "--teacher_path", path,
                   "--output_dir", out, cwd=espnet_data["root"])
        stats[kind] = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)["reporter"]["stats"][1]
    for phase in ("train", "valid"):
        a, b = stats["fairseq"][phase], stats["huggingface"][phase]
        assert a["loss_kd"] > 0
        for key in ("loss_kd", "kd_l1_t1s1", "kd_l1_t3s2"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (phase, key)
