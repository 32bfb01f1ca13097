"""A fairseq ``kd_streaming_student`` (``model.frontend=kaldi_fbank``) trained by ``fairseq-hydra-train`` exports through
``python -m kd_core.export_onnx``; onnxruntime chunk by chunk equals the checkpoint's own streaming decode."""
import numpy as np
import pytest
import soundfile as sf
import torch
from fairseq_helpers import hydra_train, run_module

from fairseq_kd.decode import load_checkpoint
from kd_core.deploy import runtime


@pytest.mark.slow
def test_fairseq_student_exports_and_onnxruntime_equals_its_streaming_decode(fairseq_data, tmp_path):
    hydra_train("+method=scratch", f"task.data={fairseq_data['letters']}", "optimization.max_epoch=1",
                "model.frontend=kaldi_fbank", "model.chunk_size=4", "model.num_left_chunks=2",
                save_dir=tmp_path / "ckpt", cwd=tmp_path)
    ckpt = tmp_path / "ckpt" / "checkpoint_last.pt"
    proc = run_module("kd_core.export_onnx", "--checkpoint", ckpt, "--out", tmp_path / "onnx", cwd=tmp_path)
    assert "tokens: " in proc.stdout
    tokens = (tmp_path / "onnx" / "tokens.txt").read_text().split("\n")
    assert tokens[0] == "<blk> 0" and any(t.startswith("\u2581 ") for t in tokens)  # fairseq's | is the word boundary
    meta = runtime.read_metadata(str(tmp_path / "onnx" / "model-streaming.onnx"))
    assert (meta["chunk_size"], meta["left_chunks"], meta["feature_dim"]) == ("4", "2", "40")

    model, _ = load_checkpoint(str(ckpt))
    student = model.student
    tsv = (fairseq_data["letters"] / "valid.tsv").read_text().splitlines()
    wav = torch.from_numpy(sf.read(f"{tsv[0]}/{tsv[1].split()[0]}", dtype="float32")[0])[None]
    ref = torch.log_softmax(student.stream(wav.split(1600, dim=1)).logits, -1)[0].numpy()
    fe = student.frontend
    got = runtime.OrtStreamer(str(tmp_path / "onnx" / "model-streaming.onnx")).run(fe.runtime_features(wav)[0].numpy())
    assert got.shape[0] >= 16 and ref.shape[0] - got.shape[0] < 4
    np.testing.assert_allclose(got, ref[: got.shape[0]], rtol=0, atol=1e-4)
