"""Method presets through the real ESPnet trainer: aux branches + APC, LF-MMI (DistillW2V2), two-stage."""
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_espnet
from test_espnet_kd_train import CHUNKED, _train

pytestmark = pytest.mark.slow


def _export(out, dst, cwd):
    run_espnet("espnet_kd.export", "--config", out / "config.yaml", "--model_file", out / "valid.loss.best.pth",
               "--out_dir", dst, cwd=cwd)
    return torch.load(dst / "model.pth", map_location="cpu")


def _stats(out):
    return torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)["reporter"]["stats"][1]["train"]


def test_aux_apc_trains_and_export_has_plain_student_cost(espnet_data, tiny_teachers, tmp_path):
    hub = ["--teacher_type", "fairseq", "--teacher_path", tiny_teachers["fairseq_hubert"], "--max_epoch", "1"]
    _train(espnet_data, tmp_path / "aux", *CHUNKED, *hub, "--kd_loss", "aux_apc", "--kd_loss_conf", "layer_map='2:1,3:2'",
           "--kd_loss_conf", "apc_shift=2")
    stats = _stats(tmp_path / "aux")
    assert {"aux_l1_t2s1", "apc_cos_t3s2", "loss_kd"} <= set(stats), sorted(stats)
    trained = torch.load(tmp_path / "aux/valid.loss.best.pth", map_location="cpu")
    assert any(k.startswith("kd_loss.aux_layers.") for k in trained)  # the branch trained ...
    _train(espnet_data, tmp_path / "plain", *CHUNKED, *hub, "--kd_loss_conf", "layer_map='2:1,3:2'")
    aux, plain = _export(tmp_path / "aux", tmp_path / "aux_x", tmp_path), _export(tmp_path / "plain", tmp_path / "plain_x", tmp_path)
    # ... and is gone from the exported student: same tensors, same sizes, same inference cost
    assert {k: v.shape for k, v in aux.items()} == {k: v.shape for k, v in plain.items()}


def test_lfmmi_then_two_stage_streaming_student(espnet_data, tiny_teachers, tmp_path):
    tokens = Path(tiny_teachers["espnet"]).parent / "espnet_asr_tiny" / "tokens.txt"  # the CTC teacher's token list
    zoo = ["--teacher_type", "espnet", "--teacher_conf", f"cachedir={tmp_path}/zoo", "--token_list", tokens, "--max_epoch", "1"]
    lfmmi = ["--kd_loss", "lfmmi", "--kd_loss_conf", "layer_map='2:2'", "--kd_loss_conf", "alpha=0.8",
             "--kd_loss_conf", "beta=0.8"]
    stage1 = [a if a != "chunk_size=4" else "chunk_size=0" for a in CHUNKED]  # shrink: non-streaming small student
    s1 = tmp_path / "stage1"
    _train(espnet_data, s1, *stage1, *zoo, "--teacher_path", tiny_teachers["espnet"], *lfmmi)
    stats = _stats(s1)
    assert {"lfmmi", "lfmmi_mse", "loss_kd", "kd_l2_t2s2"} <= set(stats), sorted(stats)
    # the reported KD loss is DistillW2V2's combination of the reported terms (alpha = beta = 0.8, hidden MSE)
    expected = 0.2 * stats["kd_l2_t2s2"] + 0.8 * (0.8 * stats["lfmmi"] + 0.2 * stats["lfmmi_mse"])
    assert stats["loss_kd"] == pytest.approx(expected, rel=1e-4) and stats["lfmmi"] >= 0  # MMI >= 0: num paths are den paths
    assert len(list((s1 / "den_graph").glob("den_ctc_bigram_*.pt"))) == 1
    # stage 2: streaming student initialised from stage 1 and distilled from it (packed like any ESPnet model)
    exported = _export(s1, tmp_path / "stage1_x", tmp_path)
    run_espnet("espnet2.bin.pack", "asr", "--asr_train_config", tmp_path / "stage1_x/config.yaml", "--asr_model_file",
               tmp_path / "stage1_x/model.pth", "--outpath", tmp_path / "stage1.zip", cwd=tmp_path)
    _assert_asr_kd_teacher_is_batch_invariant(tmp_path / "stage1.zip", tmp_path / "zoo_s1")
    s2 = tmp_path / "stage2"
    init = [f"{tmp_path}/stage1_x/model.pth:{m}:{m}" for m in ("frontend", "encoder", "ctc")]
    _train(espnet_data, s2, *CHUNKED, *zoo, "--teacher_path", tmp_path / "stage1.zip", "--teacher_conf", "task=asr_kd",
           *lfmmi, "--init_param", *init, "--optim_conf", "lr=0.00001",
           "--kd_den_graph_source", "teacher", "--kd_loss_conf", "topology=2state")  # no transcripts for the den graph
    assert len(list((s2 / "den_graph").glob("den_2state_bigram_*.pt"))) == 1
    cfg = yaml.safe_load((s2 / "config.yaml").read_text())
    assert cfg["encoder_conf"]["chunk_size"] == 4 and "lfmmi" in _stats(s2)
    final = torch.load(s2 / "valid.loss.best.pth", map_location="cpu")
    key = "encoder.net.layers.0.att.qkv.weight" if "encoder.net.layers.0.att.qkv.weight" in final else \
        next(k for k in final if k.startswith("encoder.net.layers.0.") and k.endswith("weight"))
    assert (final[key] - exported[key]).abs().max() < 0.01  # started from stage 1 (tiny lr), not from scratch


def _assert_asr_kd_teacher_is_batch_invariant(zip_path, cachedir):
    """The packed asr_kd student as a teacher (``--teacher_conf task=asr_kd``): the same targets batched or alone."""
    from float_noise import assert_float_noise_close

    from espnet_kd.task import ASRKDTask
    from kd_core.teachers import load_teacher

    t = load_teacher("espnet", str(zip_path), cachedir=str(cachedir), task_class=ASRKDTask)
    wav, lens = torch.randn(3, 16000, generator=torch.Generator().manual_seed(0)), torch.tensor([16000, 11000, 6500])
    batched = t(wav, lens)
    for i in range(3):
        alone = t(wav[i : i + 1, : lens[i]], lens[i : i + 1])
        n = int(alone.lengths[0])
        assert int(batched.lengths[i]) == n
        for k, (h_b, h_a) in enumerate(zip(batched.hidden, alone.hidden)):
            # CHUNKED student: FFN 64 wide; fbank + 2 conv2d + 2 conformer blocks x (2 FFN, attention, conv) + head
            assert_float_noise_close(h_b[i, :n], h_a[0], width=64, depth=16, what=f"layer {k} utt {i}")


def test_hubert_disc_trains_from_the_pre_trained_teachers_codebook(espnet_data, tiny_teachers, tmp_path):
    hub = ["--teacher_type", "fairseq", "--teacher_path", tiny_teachers["fairseq_hubert"], "--max_epoch", "1"]
    _train(espnet_data, tmp_path / "disc", *CHUNKED, *hub, "--kd_loss", "hubert_disc", "--kd_loss_conf", "layer_map='1:1,3:2'")
    stats = _stats(tmp_path / "disc")
    assert {"kd_disc", "kd_disc_agree", "kd_l1_t3s2", "loss_kd"} <= set(stats) and stats["kd_disc"] > 0, sorted(stats)
    trained = torch.load(tmp_path / "disc/valid.loss.best.pth", map_location="cpu")
    assert any(k.startswith("kd_loss.disc_proj.") for k in trained)  # the learnt projection trains ...
    assert not any("codewords" in k or "proj_weight" in k for k in trained)  # ... the teacher's frozen codebook is not saved
    # a fine-tuned (CTC) teacher has no codebook: one line naming the option, before training
    bad = _train(espnet_data, tmp_path / "bad", *CHUNKED, "--teacher_type", "fairseq", "--teacher_path",
                 tiny_teachers["fairseq_w2v2_ctc"], "--kd_loss", "hubert_disc", "--kd_loss_conf", "layer_map='1:1,3:2'",
                 check=False)
    assert bad.returncode != 0 and "--teacher_path: " in bad.stderr and "pre-trained" in bad.stderr
