"""asr.sh's default --feats_normalize global_mvn: a kd_chunked student streams it exactly (a per-frame affine
map); whole-utterance normalisation is refused at training start with one line."""
import numpy as np
import pytest
import torch
from float_noise import assert_float_noise_close

from espnet_kd.bin.asr_kd_inference import check_streamable, streaming_encoder_output
from espnet_kd.frontend import KDStreamingFrontend
from espnet_kd.task import ASRKDTask
from kd_core.errors import KDConfigError


def _build(tmp_path, *normalize):
    tmp_path.mkdir(parents=True, exist_ok=True)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("<blank>\n<unk>\na\nb\n<sos/eos>\n")
    args = ASRKDTask.get_parser().parse_args([
        "--token_list", str(tokens), "--output_dir", str(tmp_path), "--frontend", "kd_streaming", "--frontend_conf",
        "n_mels=40", "--frontend_conf", "channels=8", *normalize, "--encoder", "kd_chunked", "--encoder_conf", "d_model=32",
        "--encoder_conf", "num_layers=2", "--encoder_conf", "ffn_dim=64", "--encoder_conf", "chunk_size=4",
        "--decoder", "none", "--model_conf", "ctc_weight=1.0", "--model_conf", "kd_weight=0.0"])
    torch.manual_seed(0)
    return ASRKDTask.build_model(args).eval()


def test_global_mvn_streams_exactly(tmp_path):
    dim = KDStreamingFrontend(n_mels=40, channels=8).output_size()
    rng = np.random.default_rng(0)
    mean, std, count = rng.normal(0, 3, dim), rng.uniform(0.5, 4, dim), 1000
    stats = tmp_path / "feats_stats.npz"  # what asr.sh's collect-stats stage writes
    np.savez(stats, count=count, sum=mean * count, sum_square=(std ** 2 + mean ** 2) * count)
    model = _build(tmp_path, "--normalize", "global_mvn", "--normalize_conf", f"stats_file={stats}")
    check_streamable(model, "--kd_chunk_streaming true")  # accepted
    wav = torch.randn(1, 21_111, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        offline, _ = model.encode(wav, torch.tensor([wav.size(1)]))
        plain = _build(tmp_path / "plain", "--normalize", "none")
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")})
        unnormalised, _ = plain.encode(wav, torch.tensor([wav.size(1)]))
    assert (offline - unnormalised).abs().max() > 0.1  # the normalisation matters here ...
    streamed = streaming_encoder_output(model, wav, 2080)  # 130 ms pieces
    assert streamed.shape == offline.shape
    # ... and streaming applies it exactly (student: FFN 64 wide; fbank + conv2d + 2 conformer blocks deep)
    assert_float_noise_close(streamed, offline, width=64, depth=16, what="streamed vs offline with global_mvn")


def test_utterance_mvn_is_refused_at_training_start(tmp_path):
    with pytest.raises(KDConfigError, match=r"--normalize utterance_mvn: .*asr.sh: --feats_normalize global_mvn\|none"):
        _build(tmp_path, "--normalize", "utterance_mvn")
