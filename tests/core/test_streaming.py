"""Chunk masks, latency arithmetic and exact chunk-by-chunk streaming of the student."""
import math
import random

import pytest
import torch
from float_noise import assert_float_noise_close

from kd_core.errors import KDConfigError
from kd_core.streaming import algorithmic_latency_ms, chunk_attention_mask, frames_to_ms, ms_to_frames
from kd_core.students import SampleBuffer, WaveformCNN, student_tiny


def brute_force_mask(t, chunk, left, right):
    m = torch.zeros(t, t, dtype=torch.bool)
    for i in range(t):
        for j in range(t):
            if chunk <= 0:
                m[i, j] = True
                continue
            c = i // chunk
            lo = 0 if left < 0 else max(0, (c - left) * chunk)
            m[i, j] = lo <= j < (c + 1) * chunk + right
    return m


@pytest.mark.parametrize("t,chunk,left,right", [(11, 3, -1, 0), (11, 3, 1, 0), (13, 4, 2, 2), (7, 0, -1, 0), (9, 2, 0, 1), (5, 8, -1, 3)])
def test_chunk_mask_matches_definition(t, chunk, left, right):
    assert torch.equal(chunk_attention_mask(t, chunk, left, right), brute_force_mask(t, chunk, left, right))


def test_ms_frames_and_latency():
    assert ms_to_frames(480, 40) == 12
    assert frames_to_ms(12, 40) == 480
    with pytest.raises(KDConfigError, match="chunk_ms=500"):
        ms_to_frames(500, 40)
    assert algorithmic_latency_ms(12, 40.0) == 480
    assert algorithmic_latency_ms(12, 40.0, right_context=2, frontend_lookahead_ms=45) == 605
    assert math.isinf(algorithmic_latency_ms(0, 40.0))


def _pieces(wav, seed):
    g = torch.Generator().manual_seed(seed)
    cuts = torch.randint(50, 4000, (200,), generator=g).cumsum(0)
    cuts = [0] + [int(c) for c in cuts if c < wav.size(1)] + [wav.size(1)]
    return [wav[:, a:b] for a, b in zip(cuts[:-1], cuts[1:])]


@pytest.mark.parametrize("frontend", ["fbank", "wav_cnn"])
@pytest.mark.parametrize("block_type", ["conformer", "transformer"])
@pytest.mark.parametrize("left,right", [(-1, 0), (1, 0), (2, 3)])
def test_streaming_equals_masked_full_forward(frontend, block_type, left, right):
    torch.manual_seed(0)
    conf = dict(block_type=block_type, chunk_size=4, num_left_chunks=left, right_context=right, vocab_size=11)
    if frontend == "wav_cnn":
        conf.update(frontend="wav_cnn", frontend_conf=dict(conv_layers=[(32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 2, 2), (32, 2, 2), (32, 2, 2), (32, 2, 2)]))
    model = student_tiny(**conf).eval()
    wav = torch.randn(1, 21_111)
    full = model(wav, torch.tensor([wav.size(1)]))
    streamed = model.stream(_pieces(wav, seed=1))
    assert streamed.hidden[-1].shape == full.hidden[-1].shape
    for k, (a, b) in enumerate(zip(full.hidden + [full.logits], streamed.hidden + [streamed.logits])):
        assert b.shape == a.shape
        assert_float_noise_close(b, a, width=128, depth=16, what=f"output {k}")  # student_tiny: FFN 128, ~16 reductions deep


def test_chunk_mask_limits_context():
    """Changing audio after a chunk (+look-ahead) must not change that chunk's outputs."""
    torch.manual_seed(0)
    model = student_tiny(chunk_size=4, right_context=2).eval()
    wav = torch.randn(1, 16000)
    out = model(wav, torch.tensor([16000])).hidden[-1]
    # frames 0..3 (chunk 0) + 2 look-ahead frames depend on samples < 6 * 640 + front-end look-ahead
    cut = 6 * model.frontend.stride + model.frontend.receptive_field
    wav2 = wav.clone()
    wav2[:, cut:] = torch.randn(1, 16000 - cut)
    out2 = model(wav2, torch.tensor([16000])).hidden[-1]
    torch.testing.assert_close(out2[:, :4], out[:, :4], atol=1e-5, rtol=0)
    assert (out2[:, 8:] - out[:, 8:]).abs().max() > 1e-3
    full = student_tiny(chunk_size=0).eval()
    full.load_state_dict(model.state_dict(), strict=False)
    # a full-context model (non-causal conv) sees the change everywhere
    assert (full(wav2, torch.tensor([16000])).hidden[-1][:, :4] - full(wav, torch.tensor([16000])).hidden[-1][:, :4]).abs().max() > 1e-4


def test_student_padding_invariant():
    torch.manual_seed(0)
    model = student_tiny(chunk_size=3, vocab_size=7).eval()
    a, b = torch.randn(9000), torch.randn(14000)
    batch = torch.zeros(2, 14000)
    batch[0, :9000], batch[1] = a, b
    out = model(batch, torch.tensor([9000, 14000]))
    alone = model(a[None], torch.tensor([9000]))
    n = int(out.lengths[0])
    assert n == alone.hidden[-1].size(1)
    torch.testing.assert_close(out.hidden[-1][0, :n], alone.hidden[-1][0], atol=1e-5, rtol=0)


def test_sample_buffer_reproduces_valid_conv():
    torch.manual_seed(0)
    cnn = WaveformCNN([(8, 10, 5), (8, 3, 2), (8, 2, 2)]).eval()
    wav = torch.randn(1, 5000)
    full, _ = cnn(wav, torch.tensor([5000]))
    buf, outs = SampleBuffer(cnn.receptive_field, cnn.stride), []
    for p in _pieces(wav, seed=3):
        ready = buf.push(p)
        if ready.size(1):
            outs.append(cnn(ready, torch.tensor([ready.size(1)]))[0])
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-6, rtol=0)


def test_dynamic_chunk_only_in_training():
    random.seed(0)
    model = student_tiny(chunk_size=2, dynamic_chunk=True)
    model.eval()
    assert {model.encoder._chunk() for _ in range(50)} == {2}
    model.train()
    drawn = [model.encoder._chunk() for _ in range(400)]
    assert set(drawn) == {1, 2, 3, 4}  # random chunk sizes 1..2*chunk_size ...
    assert 0.6 < drawn.count(2) / len(drawn) < 0.75  # ... on half of the batches (else 2): expected 0.5 + 0.5/4
    assert {student_tiny(chunk_size=2).train().encoder._chunk() for _ in range(50)} == {2}  # off unless asked


def test_waveform_cnn_equals_torchaudio_layer_norm_extractor():
    """The channels-last (unfold + matmul) WaveformCNN computes torchaudio's own ``layer_norm`` feature
    extractor (Conv1d -> LayerNorm over channels -> GELU, the layout of fairseq's ``extractor_mode="layer_norm"``)
    with the same weights: outputs, lengths and input gradients; shorter-than-one-frame input gives no frames."""
    from torchaudio.models.wav2vec2.components import _get_feature_extractor

    torch.manual_seed(0)
    layers = [(16, 10, 5), (16, 3, 2), (24, 3, 2), (24, 2, 2)]
    ours = WaveformCNN(layers)
    ref = _get_feature_extractor("layer_norm", layers, bias=False)
    for conv, norm, block in zip(ours.convs, ours.norms, ref.conv_layers):
        with torch.no_grad():
            conv.weight.copy_(torch.randn_like(conv.weight) * 0.3)
            norm.weight.copy_(1 + 0.1 * torch.randn_like(norm.weight))
            norm.bias.copy_(0.1 * torch.randn_like(norm.bias))
        block.conv.weight, block.layer_norm.weight, block.layer_norm.bias = conv.weight, norm.weight, norm.bias
    wav = torch.randn(3, 4000, requires_grad=True)
    lens = torch.tensor([4000, 3100, 500])
    got, got_len = ours(wav, lens)
    want, want_len = ref(wav, lens)
    assert torch.equal(got_len, want_len)
    assert_float_noise_close(got, want, width=24 * 3, depth=4, what="frames")
    (g_ours,) = torch.autograd.grad((got * torch.cos(got)).sum(), wav)
    (g_ref,) = torch.autograd.grad((want * torch.cos(want)).sum(), wav)
    assert_float_noise_close(g_ours, g_ref, width=24 * 3, depth=8, what="input gradient")
    empty, n = ours(torch.randn(2, ours.receptive_field - 1), torch.tensor([ours.receptive_field - 1] * 2))
    assert empty.shape == (2, 0, 24) and n.tolist() == [0, 0]
