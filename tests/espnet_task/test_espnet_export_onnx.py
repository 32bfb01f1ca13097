"""An ESPnet ``asr_kd`` student (kaldi_fbank front-end, global_mvn, chunked encoder) trained by the real trainer exports
through ``python -m kd_core.export_onnx``; onnxruntime chunk by chunk equals ESPnet's own streaming decode of the same
model file, and sherpa-onnx loads and runs the export."""
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import run_espnet

from espnet_kd.bin.asr_kd_inference import streaming_encoder_output
from espnet_kd.frontend import KDStreamingFrontend
from espnet_kd.task import ASRKDTask
from kd_core.deploy import runtime


@pytest.mark.slow
def test_espnet_student_exports_and_onnxruntime_equals_espnet_streaming(espnet_data, tmp_path):
    dim = KDStreamingFrontend(kind="kaldi_fbank", n_mels=80, channels=8).output_size()
    rng = np.random.default_rng(0)
    mean, std, count = rng.normal(0, 1, dim), rng.uniform(0.5, 2, dim), 1000
    stats = tmp_path / "feats_stats.npz"
    np.savez(stats, count=count, sum=mean * count, sum_square=(std ** 2 + mean ** 2) * count)
    out = tmp_path / "exp"
    run_espnet("espnet2.bin.asr_kd_train", *espnet_data["train"], "--output_dir", out, "--frontend", "kd_streaming",
               "--frontend_conf", "kind=kaldi_fbank", "--frontend_conf", "channels=8", "--normalize", "global_mvn",
               "--normalize_conf", f"stats_file={stats}", "--encoder", "kd_chunked", "--encoder_conf", "d_model=32",
               "--encoder_conf", "num_layers=2", "--encoder_conf", "ffn_dim=64", "--encoder_conf", "chunk_size=4",
               "--encoder_conf", "num_left_chunks=2", "--decoder", "none", "--model_conf", "ctc_weight=1.0",
               "--model_conf", "kd_weight=0.0", "--max_epoch", "1", cwd=espnet_data["root"])
    onnx_dir = tmp_path / "onnx"
    proc = run_espnet("kd_core.export_onnx", "--checkpoint", out / "1epoch.pth", "--config", out / "config.yaml",
                      "--out", onnx_dir, "--int8", cwd=tmp_path)
    assert "model: " in proc.stdout and (onnx_dir / "model-streaming.int8.onnx").is_file()
    tokens = (onnx_dir / "tokens.txt").read_text().split("\n")
    assert tokens[0] == "<blk> 0" and "\u2581 2" in tokens  # ESPnet's <space> (id 2) becomes the runtime's word boundary

    model, _ = ASRKDTask.build_model_from_file(out / "config.yaml", out / "1epoch.pth", "cpu")
    model.eval()
    wav_path = (espnet_data["root"] / "dump" / "test" / "wav.scp").read_text().split()[1]
    wav = torch.from_numpy(sf.read(wav_path, dtype="float32")[0])[None]
    with torch.no_grad():
        ref = model.ctc.log_softmax(streaming_encoder_output(model, wav, 1600))[0].numpy()  # ESPnet's own path
    fe = model.frontend.net
    got = runtime.OrtStreamer(str(onnx_dir / "model-streaming.onnx")).run(fe.runtime_features(wav)[0].numpy())
    assert got.shape[0] >= 16 and ref.shape[0] - got.shape[0] < 4
    np.testing.assert_allclose(got, ref[: got.shape[0]], rtol=0, atol=1e-4)
    recognizer = runtime.sherpa_recognizer(str(onnx_dir), int8=True)
    assert isinstance(runtime.sherpa_transcribe(recognizer, wav[0].numpy()), str)
