"""The real ESPnet trainer distils tiny real teachers through ``espnet2.bin.asr_kd_train``."""
import inspect
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import ROOT, run_espnet

CHUNKED = ["--frontend", "kd_streaming", "--frontend_conf", "n_mels=40", "--frontend_conf", "channels=8",
           "--normalize", "none", "--encoder", "kd_chunked", "--encoder_conf", "d_model=32", "--encoder_conf", "num_layers=2",
           "--encoder_conf", "ffn_dim=64", "--encoder_conf", "chunk_size=4", "--encoder_conf", "dropout=0.0",
           "--decoder", "none", "--model_conf", "ctc_weight=1.0"]


def _train(data, out, *extra, check=True):
    return run_espnet("espnet2.bin.asr_kd_train", *data["train"], "--output_dir", out, *extra, cwd=data["root"], check=check)


def test_print_config_shows_kd_options():
    proc = subprocess.run([sys.executable, "-m", "espnet2.bin.asr_kd_train", "--print_config", "--encoder", "kd_chunked",
                           "--frontend", "kd_streaming"], capture_output=True, text=True, check=True)
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model"] == "espnet_kd" and cfg["kd_loss"] == "layerwise"
    assert {"teacher_type", "teacher_path", "teacher_conf"} <= set(cfg)
    assert {"layer_map", "l1_weight", "cos_weight", "heads"} <= set(cfg["kd_loss_conf"])
    assert "teacher_dim" not in cfg["kd_loss_conf"]  # derived from the teacher, never configured
    assert {"kd_weight", "asr_weight", "ctc_weight"} <= set(cfg["model_conf"])
    assert cfg["encoder_conf"]["chunk_size"] == 0 and "d_model" in cfg["encoder_conf"]


def test_espnet_choices_are_not_mutated():
    import espnet2.tasks.asr as asr

    import espnet_kd.task  # noqa: F401

    assert "kd_chunked" not in asr.encoder_choices.classes and "espnet_kd" not in asr.model_choices.classes


def test_encoder_wrapper_mirrors_core_signature():
    from kd_core.students.encoder import ChunkedEncoder

    from espnet_kd.encoder import KDChunkedEncoder

    core = inspect.signature(ChunkedEncoder).parameters
    ours = inspect.signature(KDChunkedEncoder).parameters
    assert [k for k in core if k != "input_dim"] == [k for k in ours if k != "input_size"]
    assert all(core[k].default == ours[k].default for k in core if k != "input_dim")


@pytest.mark.slow
def test_kd_with_fairseq_hubert_teacher_resume_and_streaming(espnet_data, tiny_teachers, tmp_path):
    out = tmp_path / "exp"
    kd = ["--teacher_type", "fairseq", "--teacher_path", tiny_teachers["fairseq_hubert"], "--kd_loss_conf", "layer_map='1:1,3:2'"]
    kd += ["--keep_nbest_models", "2"]
    _train(espnet_data, out, *CHUNKED, *kd, "--max_epoch", "1")
    first = (out / "1epoch.pth").read_bytes()
    state = torch.load(out / "1epoch.pth", map_location="cpu")
    assert any(k.startswith("kd_loss.heads.") for k in state)  # KD heads train with the student ...
    assert not any("teacher" in k for k in state)  # ... the teacher is never saved
    stats = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)["reporter"]["stats"][1]["train"]
    assert {"loss", "loss_asr", "loss_kd", "kd_l1_t1s1", "kd_cos_t3s2"} <= set(stats), sorted(stats)
    assert stats["loss_kd"] > 0 and (out / "images" / "loss_kd.png").exists()
    # stopped after epoch 1; resuming continues at epoch 2 and leaves epoch 1's snapshot untouched
    proc = _train(espnet_data, out, *CHUNKED, *kd, "--max_epoch", "2", "--resume", "true")
    assert "2/2epoch started" in proc.stderr and "1/2epoch started" not in proc.stderr, proc.stderr[-2000:]
    assert (out / "1epoch.pth").read_bytes() == first and (out / "2epoch.pth").exists()
    # offline (chunk-masked full forward) and chunk-by-chunk streaming decoding agree exactly
    dec = ["--data_path_and_name_and_type", f"{espnet_data['root']}/dump/test/wav.scp,speech,sound",
           "--asr_train_config", out / "config.yaml", "--asr_model_file", out / "valid.loss.best.pth"]
    run_espnet("espnet2.bin.asr_kd_inference", *dec, "--output_dir", tmp_path / "offline", cwd=tmp_path)
    run_espnet("espnet2.bin.asr_kd_inference", *dec, "--kd_chunk_streaming", "true", "--kd_piece_ms", "130",
               "--output_dir", tmp_path / "stream", cwd=tmp_path)
    for name in ("token_int", "text"):
        a = (tmp_path / "offline/1best_recog" / name).read_text()
        assert a == (tmp_path / "stream/1best_recog" / name).read_text() and len(a.splitlines()) == 4
    scores = [[float(v.split()[1]) for v in (tmp_path / d / "1best_recog/score").read_text().splitlines()] for d in ("offline", "stream")]
    assert scores[0] == pytest.approx(scores[1], abs=1e-3)


@pytest.mark.slow
def test_sew_squeezed_student_distils_and_streams(espnet_data, tiny_teachers, tmp_path):
    """``--encoder_conf squeeze=2`` (SEW): the real trainer distils into the squeezed student (its learnt upsampling
    trains), and its chunk-by-chunk decoding equals the offline one."""
    out = tmp_path / "exp"
    _train(espnet_data, out, *CHUNKED, "--encoder_conf", "squeeze=2", "--teacher_type", "fairseq", "--teacher_path",
           tiny_teachers["fairseq_hubert"], "--kd_loss_conf", "layer_map='1:1,3:2'", "--max_epoch", "1")
    state = torch.load(out / "1epoch.pth", map_location="cpu")
    assert any(k.startswith("encoder.net.upsample.") for k in state), sorted(state)[:8]
    dec = ["--data_path_and_name_and_type", f"{espnet_data['root']}/dump/test/wav.scp,speech,sound",
           "--asr_train_config", out / "config.yaml", "--asr_model_file", out / "valid.loss.best.pth"]
    run_espnet("espnet2.bin.asr_kd_inference", *dec, "--output_dir", tmp_path / "offline", cwd=tmp_path)
    run_espnet("espnet2.bin.asr_kd_inference", *dec, "--kd_chunk_streaming", "true", "--kd_piece_ms", "130",
               "--output_dir", tmp_path / "stream", cwd=tmp_path)
    a = (tmp_path / "offline/1best_recog/token_int").read_text()
    assert a == (tmp_path / "stream/1best_recog/token_int").read_text() and len(a.splitlines()) == 4


@pytest.mark.slow
def test_kd_from_zoo_teacher_into_stock_encoder_decodes_without_our_package(espnet_data, tiny_teachers, tmp_path):
    """ESPnet teacher (packed zip via espnet_model_zoo) -> contextual-block conformer student; the exported
    student decodes with stock asr_inference in a process where importing our packages would fail."""
    out = tmp_path / "exp"
    student = ["--frontend", "default", "--frontend_conf", "n_fft=400", "--frontend_conf", "hop_length=160",
               "--normalize", "utterance_mvn", "--encoder", "contextual_block_conformer", "--encoder_conf", "output_size=32",
               "--encoder_conf", "attention_heads=2", "--encoder_conf", "linear_units=64", "--encoder_conf", "num_blocks=2",
               "--encoder_conf", "block_size=8", "--encoder_conf", "hop_size=4", "--encoder_conf", "look_ahead=2",
               "--decoder", "none", "--model_conf", "ctc_weight=1.0"]
    kd = ["--teacher_type", "espnet", "--teacher_path", tiny_teachers["espnet"], "--teacher_conf", f"cachedir={tmp_path}/zoo",
          "--kd_loss_conf", "layer_map='2:2'"]
    _train(espnet_data, out, *student, *kd, "--max_epoch", "1")
    run_espnet("espnet_kd.export", "--config", out / "config.yaml", "--model_file", out / "valid.loss.best.pth",
               "--out_dir", tmp_path / "export", cwd=tmp_path)
    cfg = yaml.safe_load((tmp_path / "export/config.yaml").read_text())
    assert cfg["model"] == "espnet" and "teacher_path" not in cfg and "kd_weight" not in cfg["model_conf"]
    assert not any(k.startswith("kd_loss.") for k in torch.load(tmp_path / "export/model.pth", map_location="cpu"))
    blocker = ("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('kd_core', 'espnet_kd', 'fairseq_kd'):\n"
               "            raise ImportError('our package must not be needed: ' + name)\n"
               "sys.meta_path.insert(0, Block())\nfrom espnet2.bin.asr_inference import main\nmain(sys.argv[1:])\n"
               "assert not [m for m in sys.modules if m.split('.')[0] in ('kd_core', 'espnet_kd')]\n")
    args = ["--data_path_and_name_and_type", f"{espnet_data['root']}/dump/test/wav.scp,speech,sound",
            "--asr_train_config", tmp_path / "export/config.yaml", "--asr_model_file", tmp_path / "export/model.pth",
            "--beam_size", "1", "--ctc_weight", "1.0", "--output_dir", tmp_path / "stock"]
    env = {**os.environ, "ESPNET_KD_NO_ALIASES": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", blocker, *map(str, args)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stock_text = (tmp_path / "stock/1best_recog/text").read_text()
    assert len(stock_text.splitlines()) == 4
    # stock streaming decoding of the exported student (ESPnet's own block-streaming decoder)
    stream = [a if a != tmp_path / "stock" else tmp_path / "stock_stream" for a in args]
    proc = subprocess.run([sys.executable, "-c", blocker.replace("asr_inference import", "asr_inference_streaming import"),
                           *map(str, stream)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len((tmp_path / "stock_stream/1best_recog/text").read_text().splitlines()) == 4
    # asr_kd_inference on the *training* config exports on the fly and hands the stock student to ESPnet's decoder
    run_espnet("espnet2.bin.asr_kd_inference", "--data_path_and_name_and_type", f"{espnet_data['root']}/dump/test/wav.scp,speech,sound",
               "--asr_train_config", out / "config.yaml", "--asr_model_file", out / "valid.loss.best.pth", "--beam_size", "1",
               "--ctc_weight", "1.0", "--output_dir", tmp_path / "kd_inf", cwd=tmp_path)
    assert (tmp_path / "kd_inf/1best_recog/text").read_text() == stock_text
    # packs with ESPnet's own tool and unpacks offline with espnet_model_zoo
    run_espnet("espnet2.bin.pack", "asr", "--asr_train_config", tmp_path / "export/config.yaml", "--asr_model_file",
               tmp_path / "export/model.pth", "--outpath", tmp_path / "student.zip", cwd=tmp_path)
    from espnet_model_zoo.downloader import ModelDownloader

    files = ModelDownloader(cachedir=str(tmp_path / "zoo2")).download_and_unpack(str(tmp_path / "student.zip"))
    assert os.path.exists(files["asr_model_file"]) and os.path.exists(files["asr_train_config"])


@pytest.mark.parametrize("extra, needle", [
    (["--kd_loss", "nosuchloss"], "--kd_loss"),
    (["--teacher_path", "/nonexistent/hubert.pt"], "teacher_path"),
    (["--kd_loss_conf", "layer_map='1:7'"], "student layer 7 out of range"),
    (["--kd_loss_conf", "layer_map=1:7"], "quote the map"),
    (["--kd_loss", "aux_apc", "--kd_loss_conf", "heads=linear"], "not an option of kd_loss aux_apc"),
    (["--kd_loss_conf", "layer_map='9:1'"], "teacher layer 9 out of range"),
    (["--frontend_conf", "fs=8000"], "--frontend_conf fs=8000, but the teacher expects 16000 Hz"),
    (["--frontend_conf", "hop_ms=7.5"], "frame shifts teacher=20 ms, student=30"),  # 30 ms, measured from output lengths
    (["--model_conf", "kd_weight=-0.5"], "--model_conf kd_weight=-0.5: loss weights must be finite and >= 0"),
])
def test_bad_input_fails_before_training_with_one_line(espnet_data, tiny_teachers, tmp_path, extra, needle):
    kd = ["--teacher_type", "fairseq", "--teacher_path", tiny_teachers["fairseq_hubert"], "--kd_loss_conf", "layer_map='1:1'"]
    proc = _train(espnet_data, tmp_path / "exp", *CHUNKED, *kd, *extra, "--max_epoch", "1", check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert needle in last and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not list((tmp_path / "exp").glob("*.pth"))


def test_nonfinite_kd_steps_are_skipped_counted_and_stop_the_run(espnet_data, tiny_teachers, tmp_path):
    """A teacher whose targets are nan: every KD step is skipped (ESPnet's trainer leaves the weights alone) and
    counted in the reporter (``kd_skipped``); with ``kd_max_nonfinite=2`` the run stops with one line."""
    state = torch.load(tiny_teachers["fairseq_hubert"], map_location="cpu", weights_only=False)
    state["model"]["encoder.layer_norm.weight"][0] = float("nan")
    torch.save(state, tmp_path / "nan_teacher.pt")
    kd = ["--teacher_type", "fairseq", "--teacher_path", tmp_path / "nan_teacher.pt", "--kd_loss_conf", "layer_map='1:1'",
          "--max_epoch", "1"]
    out = tmp_path / "exp"
    _train(espnet_data, out, *CHUNKED, *kd, "--model_conf", "kd_max_nonfinite=0")
    stats = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)["reporter"]["stats"][1]["train"]
    assert stats["kd_skipped"] == 1.0 and math.isfinite(stats["loss_asr"]), stats
    weights = torch.load(out / "1epoch.pth", map_location="cpu")
    assert all(bool(torch.isfinite(v).all()) for v in weights.values() if v.is_floating_point())
    proc = _train(espnet_data, tmp_path / "stop", *CHUNKED, *kd, "--model_conf", "kd_max_nonfinite=2", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "asr_kd_train: error: --model_conf kd_max_nonfinite=2: 2 training steps in a row had a non-finite KD term")
