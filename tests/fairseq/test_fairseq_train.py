"""The real ``fairseq-hydra-train`` distils the tiny fairseq teachers: resume, stock reload, decoding, methods."""
import json
import re
import subprocess
import sys

import pytest
from fairseq_helpers import USER_DIR, hydra_train, run_module

pytestmark = pytest.mark.slow


def _state(path):
    from kd_core.teachers.fairseq_teacher import read_fairseq_checkpoint

    return read_fairseq_checkpoint(str(path))


def test_hubert_teacher_resume_stock_reload_and_streaming_decode(fairseq_data, tiny_teachers, tmp_path):
    save = tmp_path / "exp"
    args = [f"task.data={fairseq_data['letters']}", f"model.teacher_path={tiny_teachers['fairseq_hubert']}",
            "criterion.layer_map='1:1,3:2'"]
    first = hydra_train(*args, "optimization.max_epoch=1", save_dir=save, cwd=tmp_path)
    assert "begin training epoch 1" in first.stdout and "kd_l1_t3s2" in first.stdout and "wer" in first.stdout
    state = _state(save / "checkpoint_last.pt")
    assert all(k.startswith("student.") for k in state["model"])  # the teacher is never saved
    assert any(k.startswith("kd_loss.heads.") for k in state["criterion"])  # the KD heads are (with the optimizer)
    # re-running the same command with a larger budget resumes from checkpoint_last.pt
    second = hydra_train(*args, "optimization.max_epoch=2", save_dir=save, cwd=tmp_path)
    assert "Loaded checkpoint" in second.stdout and "begin training epoch 2" in second.stdout
    assert "begin training epoch 1" not in second.stdout
    # stock fairseq loader, in a fresh process that only imported the user dir the fairseq way
    code = ("import sys\nfrom argparse import Namespace\nfrom fairseq import checkpoint_utils, utils\n"
            f"utils.import_user_module(Namespace(user_dir={str(USER_DIR)!r}))\n"
            f"models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([{str(save / 'checkpoint_best.pt')!r}])\n"
            "m = models[0]\nassert m.teacher is None  # decoding never needs the teacher\n"
            "print(type(m).__name__, cfg.model.chunk_size, len(task.target_dictionary))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:-1] == ["KDStreamingStudentModel", "12"]
    # greedy decoding offline and chunk by chunk (130 ms pieces) give the same words; WER is computed
    for extra in ([], ["--streaming", "--piece-ms", "130"]):
        run_module("fairseq_kd.decode", "--checkpoint", save / "checkpoint_best.pt", "--split", "test",
                   "--results-path", tmp_path / "dec", *extra, cwd=tmp_path)
    offline = json.loads((tmp_path / "dec" / "wer.test.json").read_text())
    streaming = json.loads((tmp_path / "dec" / "wer.test.streaming.json").read_text())
    assert (tmp_path / "dec" / "hyp.test.txt").read_text() == (tmp_path / "dec" / "hyp.test.streaming.txt").read_text()
    assert offline["utterances"] == 4 and 0 <= offline["wer"] == streaming["wer"]
    assert streaming["algorithmic_latency_ms"] == 12 * 40 + 25 + 6 * 10 - 40  # chunk + fbank look-ahead


def test_sew_squeezed_student(fairseq_data, tiny_teachers, tmp_path):
    """``model.squeeze=2`` (SEW) through the real trainer: layer KD into the squeezed student, whose chunk-by-chunk
    decoding gives the offline words."""
    save = tmp_path / "exp"
    hydra_train(f"task.data={fairseq_data['letters']}", f"model.teacher_path={tiny_teachers['fairseq_hubert']}",
                "criterion.layer_map='1:1,3:2'", "model.squeeze=2", "optimization.max_epoch=1", save_dir=save, cwd=tmp_path)
    assert any(k.startswith("student.encoder.upsample.") for k in _state(save / "checkpoint_last.pt")["model"])
    for extra in ([], ["--streaming", "--piece-ms", "130"]):
        run_module("fairseq_kd.decode", "--checkpoint", save / "checkpoint_best.pt", "--split", "test",
                   "--results-path", tmp_path / "dec", *extra, cwd=tmp_path)
    assert (tmp_path / "dec" / "hyp.test.txt").read_text() == (tmp_path / "dec" / "hyp.test.streaming.txt").read_text()


def test_ctc_teacher_lfmmi_two_stage(fairseq_data, tiny_teachers, tmp_path):
    """DistillW2V2 in fairseq: stage 1 non-streaming (LF-MMI, den graph from the teacher's 1-best, 2-state
    topology), stage 2 streaming, initialised from stage 1 and distilled from it."""
    data = f"task.data={fairseq_data['ctc']}"
    s1, s2 = tmp_path / "stage1", tmp_path / "stage2"
    p1 = hydra_train("+method=stage1", data, f"model.teacher_path={tiny_teachers['fairseq_w2v2_ctc']}",
                     "criterion.den_graph_source=teacher", "criterion.topology=2state", "criterion.den_graph_dir=" + str(s1),
                     "optimization.max_epoch=1", save_dir=s1, cwd=tmp_path)
    assert "non-streaming" in p1.stdout and "lfmmi_mse" in p1.stdout
    assert len(list(s1.glob("den_2state_bigram_*.pt"))) == 1
    stage1 = _state(s1 / "checkpoint_best.pt")["model"]
    p2 = hydra_train("+method=stage2", data, f"model.init_student={s1 / 'checkpoint_best.pt'}",
                     f"model.teacher_path={s1 / 'checkpoint_best.pt'}", "optimization.lr=[1e-9]", "optimization.max_epoch=1",
                     save_dir=s2, cwd=tmp_path)
    assert "40 ms frames" in p2.stdout and "algorithmic latency 525 ms" in p2.stdout  # taught by the stage-1 student
    stage2 = _state(s2 / "checkpoint_last.pt")["model"]
    assert stage1.keys() == stage2.keys()
    assert max((stage1[k].float() - stage2[k].float()).abs().max() for k in stage1) < 1e-4  # started from stage 1


def test_aux_apc_branches_live_in_the_criterion(fairseq_data, tiny_teachers, tmp_path):
    args = [f"task.data={fairseq_data['letters']}", f"model.teacher_path={tiny_teachers['fairseq_hubert']}",
            "optimization.max_epoch=1", "criterion.layer_map='2:1,3:2'"]
    p = hydra_train("+method=aux_apc", "criterion.apc_shift=2", *args, save_dir=tmp_path / "aux", cwd=tmp_path)
    assert "aux_l1_t2s1" in p.stdout and "apc_cos_t3s2" in p.stdout
    hydra_train(*args, save_dir=tmp_path / "plain", cwd=tmp_path)
    aux, plain = _state(tmp_path / "aux" / "checkpoint_last.pt"), _state(tmp_path / "plain" / "checkpoint_last.pt")
    assert any(k.startswith("kd_loss.aux_layers.") for k in aux["criterion"])  # the branches trained ...
    # ... but the model a user decodes has exactly the plain student's tensors: same inference cost
    assert {k: v.shape for k, v in aux["model"].items()} == {k: v.shape for k, v in plain["model"].items()}


def test_reads_teacher_cache_built_from_a_kaldi_wav_scp(fairseq_data, tiny_teachers, tmp_path):
    """Keys are sample hashes: a cache built from ESPnet-style wav.scp lists serves fairseq's batches."""
    hubert = tiny_teachers["fairseq_hubert"]
    cache = tmp_path / "cache"
    for split in ("train", "valid"):
        run_module("kd_core.cache", "build", "--teacher_type", "fairseq", "--teacher_path", hubert, "--layers", "2,3",
                   "--dtype", "float32", "--out", cache, "--wav_scp", fairseq_data["corpus"] / "kaldi" / split / "wav.scp",
                   "--no_progress", cwd=tmp_path)
    args = [f"task.data={fairseq_data['letters']}", f"model.teacher_path={hubert}", "optimization.max_epoch=1"]
    online = hydra_train(*args, save_dir=tmp_path / "online", cwd=tmp_path)
    cached = hydra_train(*args, f"model.teacher_cache_dir={cache}", "model.teacher_cache_mode=read",
                         "model.teacher_cache_dtype=float32", save_dir=tmp_path / "cached", cwd=tmp_path)
    assert "teacher targets from cache" in cached.stdout and "(read, layers 2,3)" in cached.stdout

    def valid_line(p):
        return next(line.split(" | ", 1)[1] for line in p.stdout.splitlines() if "valid on 'valid' subset" in line)

    assert valid_line(online) == valid_line(cached)  # same losses to the logged precision: same targets


def test_espnet_zoo_teacher(fairseq_data, tiny_teachers, tmp_path):
    """A zip packed by espnet2.bin.pack teaches a fairseq student through the same core teacher interface."""
    p = hydra_train(f"task.data={fairseq_data['letters']}", "model.teacher_type=espnet",
                    f"model.teacher_path={tiny_teachers['espnet']}", f"model.teacher_cachedir={tmp_path / 'zoo'}",
                    "optimization.max_epoch=1", save_dir=tmp_path / "exp", cwd=tmp_path)
    assert "2 layers x 64, 40 ms frames" in p.stdout and "kd_l1_t1s1" in p.stdout  # ESPnet conformer, conv2d x4
    assert (tmp_path / "exp" / "checkpoint_last.pt").exists()


def test_scratch_and_lfmmi_overrides_alone_and_init_from_teacher(fairseq_data, tiny_teachers, tmp_path):
    """``+method=scratch`` trains without any teacher; ``+method=lfmmi`` alone (transcript den graph) with
    ``model.init_from_teacher=true`` starts the wav_cnn student from the CTC teacher's CNN and head."""
    import torch

    from kd_core.teachers import load_teacher

    p = hydra_train("+method=scratch", f"task.data={fairseq_data['letters']}", "optimization.max_epoch=1",
                    save_dir=tmp_path / "scratch", cwd=tmp_path)
    assert "kd_weight=0 ctc_weight=1, KD loss None" in p.stdout and "kd_l1" not in p.stdout
    assert (tmp_path / "scratch" / "checkpoint_last.pt").exists()

    ctc = tiny_teachers["fairseq_w2v2_ctc"]
    p = hydra_train("+method=lfmmi", f"task.data={fairseq_data['ctc']}", f"model.teacher_path={ctc}",
                    "model.frontend=wav_cnn", "model.conv_feature_layers='[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2'",
                    "model.d_model=64", "model.init_from_teacher=true", "optimization.lr=[1e-9]", "optimization.max_epoch=1",
                    f"criterion.den_graph_dir={tmp_path / 'den'}", save_dir=tmp_path / "lfmmi", cwd=tmp_path)
    assert "LFMMIKDLoss" in p.stdout and "lfmmi_mse" in p.stdout
    assert len(list((tmp_path / "den").glob("den_ctc_bigram_*.pt"))) == 1  # from the training transcripts
    model = _state(tmp_path / "lfmmi" / "checkpoint_last.pt")["model"]
    teacher = load_teacher("fairseq", str(ctc))
    first_conv = teacher.conv_blocks()[0][0].weight
    assert (model["student.frontend.convs.0.weight"].float() - first_conv).abs().max() < 1e-6  # lr 1e-9: still the teacher's
    assert (model["student.ctc.weight"].float() - teacher.prediction_layer().weight).abs().max() < 1e-6


def test_hubert_disc_method(fairseq_data, tiny_teachers, tmp_path):
    args = [f"task.data={fairseq_data['letters']}", f"model.teacher_path={tiny_teachers['fairseq_hubert']}",
            "criterion.layer_map='1:1,3:2'", "optimization.max_epoch=1"]
    p = hydra_train("+method=hubert_disc", *args, save_dir=tmp_path / "disc", cwd=tmp_path)
    assert "kd_disc" in p.stdout and "HubertDiscKDLoss" in p.stdout
    state = _state(tmp_path / "disc/checkpoint_last.pt")
    assert any(k.startswith("kd_loss.disc_proj.") for k in state["criterion"])


def test_nonfinite_kd_steps_get_zero_gradient_are_counted_and_stop_the_run(fairseq_data, tiny_teachers, tmp_path):
    """A teacher whose targets are nan: fairseq would raise FloatingPointError on the first step; the criterion gives
    those steps zero gradient and counts them (``kd_skipped``), and ``kd_max_nonfinite=2`` ends the run with one line."""
    import torch

    state = torch.load(tiny_teachers["fairseq_hubert"], map_location="cpu", weights_only=False)
    state["model"]["encoder.layer_norm.weight"][0] = float("nan")
    torch.save(state, tmp_path / "nan_teacher.pt")
    args = [f"task.data={fairseq_data['letters']}", f"model.teacher_path={tmp_path / 'nan_teacher.pt'}",
            "criterion.layer_map='1:1'", "optimization.max_epoch=1"]
    done = hydra_train(*args, "criterion.kd_max_nonfinite=0", save_dir=tmp_path / "exp", cwd=tmp_path)
    skipped = re.findall(r"\[train\]\[INFO\] - epoch .* kd_skipped ([0-9.]+)", done.stdout)  # epoch summary: fraction skipped
    assert skipped and float(skipped[-1]) == 1.0, done.stdout[-2000:]
    weights = _state(tmp_path / "exp" / "checkpoint_last.pt")["model"]
    assert all(bool(torch.isfinite(v).all()) for v in weights.values() if v.is_floating_point())
    stop = hydra_train(*args, "criterion.kd_max_nonfinite=2", save_dir=tmp_path / "stop", cwd=tmp_path, check=False)
    assert stop.returncode != 0
    assert ("fairseq_kd: error: criterion.kd_max_nonfinite=2: 2 training steps in a row had a non-finite KD term"
            in stop.stderr.strip().splitlines()[-1]), stop.stderr[-2000:]


def test_frontend_kd_stage_a_then_layer_kd(fairseq_data, tiny_teachers, tmp_path):
    """Waveform -> Fbank front-end KD: stage A trains only on the teacher's CNN output (teacher layer 0 -> student
    layer 0, no CTC), so the encoder blocks above the input projection keep their initial weights; stage B (layer KD)
    starts from stage A's weights."""
    data, teacher = f"task.data={fairseq_data['letters']}", f"model.teacher_path={tiny_teachers['fairseq_hubert']}"
    a, b = tmp_path / "a", tmp_path / "b"
    pa = hydra_train("+method=frontend_kd", data, teacher, "optimization.max_epoch=1", save_dir=a, cwd=tmp_path)
    assert "kd_l1_t0s0" in pa.stdout and "kd_l1_t3" not in pa.stdout
    init = hydra_train("+method=frontend_kd", data, teacher, "optimization.max_epoch=1", "optimization.lr=[0.0]",
                       save_dir=tmp_path / "init", cwd=tmp_path)
    assert init.returncode == 0
    trained, untouched = _state(a / "checkpoint_last.pt")["model"], _state(tmp_path / "init" / "checkpoint_last.pt")["model"]
    moved = {k for k in trained if not (trained[k].float() - untouched[k].float()).abs().max() == 0}
    assert moved and all(k.startswith(("student.frontend.", "student.encoder.embed.")) for k in moved), sorted(moved)
    hydra_train(data, teacher, f"model.init_student={a / 'checkpoint_last.pt'}", "optimization.lr=[1e-9]",
                "optimization.max_epoch=1", save_dir=b, cwd=tmp_path)
    stage_b = _state(b / "checkpoint_last.pt")["model"]
    assert max((trained[k].float() - stage_b[k].float()).abs().max() for k in trained) < 1e-4
