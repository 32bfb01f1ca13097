"""Teachers loaded through the real loaders: parity with the toolkits, exact targets, errors."""
import pytest
import torch

from kd_core.errors import KDConfigError
from kd_core.teachers import load_teacher

WAV = torch.randn(3, 16000, generator=torch.Generator().manual_seed(0))
LENS = torch.tensor([16000, 11000, 6500])
FAIRSEQ = ["fairseq_hubert", "fairseq_w2v2", "fairseq_w2v2_ctc"]


def _load(kind, name, tiny_teachers, zoo_cache):
    if kind == "espnet":
        return load_teacher("espnet", str(tiny_teachers["espnet"]), cachedir=zoo_cache)
    return load_teacher(kind, str(tiny_teachers[name]))


CASES = [("fairseq", n) for n in FAIRSEQ] + [("torchaudio", n) for n in FAIRSEQ] + [("espnet", "espnet")]


@pytest.mark.parametrize("kind,name", CASES)
def test_shapes_lengths_logits(kind, name, tiny_teachers, zoo_cache):
    t = _load(kind, name, tiny_teachers, zoo_cache)
    out = t(WAV, LENS)
    assert len(out.hidden) == t.num_layers + 1
    assert all(h.shape == (3, int(out.lengths.max()), t.hidden_size) for h in out.hidden)
    if kind == "espnet":  # ESPnet Conv2dSubsampling on 10 ms frames: ((n - 1) // 2 - 1) // 2
        frames = (LENS - 400) // 160 + 1 + 2  # ESPnet's STFT is centred (n_fft // 2 padding each side)
        assert out.lengths.tolist() == (((frames - 1) // 2 - 1) // 2).tolist() and t.frame_shift_ms == 40
    else:  # wav2vec2 CNN: ((((((L-10)//5+1)-3)//2+1)...) ; 20 ms frames
        n = LENS.clone()
        for k, s in [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2:
            n = (n - k) // s + 1
        assert out.lengths.tolist() == n.tolist() and t.frame_shift_ms == 20
    assert (out.logits is not None) == (name in ("fairseq_w2v2_ctc", "espnet"))


@pytest.mark.parametrize("name", FAIRSEQ)
def test_fairseq_parity_with_fairseq_own_loader(name, tiny_teachers):
    """Every layer equals fairseq's own per-layer API on a model from load_model_ensemble_and_task."""
    from fairseq import checkpoint_utils

    t = load_teacher("fairseq", str(tiny_teachers[name]))
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(tiny_teachers[name])])
    ref = models[0].eval()
    w2v = ref.w2v_encoder.w2v_model if hasattr(ref, "w2v_encoder") else ref
    wav = WAV[:1]
    if t.normalize:  # what fairseq's dataset does with task.normalize=True
        wav = (wav - wav.mean()) / (wav.var(unbiased=False) + 1e-5).sqrt()
    ours = t(WAV[:1], LENS[:1])
    with torch.no_grad():
        for i in range(1, t.num_layers + 1):
            if name == "fairseq_hubert":
                expect = w2v.extract_features(wav, mask=False, output_layer=i)[0]
            else:
                expect = w2v.extract_features(wav, None, mask=False, layer=i - 1)["x"]
            torch.testing.assert_close(ours.hidden[i], expect, atol=1e-5, rtol=0, msg=f"layer {i}")
        if name == "fairseq_w2v2_ctc":
            emissions = ref(source=wav, padding_mask=None)["encoder_out"].transpose(0, 1)
            torch.testing.assert_close(ours.logits, emissions, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", FAIRSEQ)
def test_torchaudio_import_matches_fairseq(name, tiny_teachers):
    fs = load_teacher("fairseq", str(tiny_teachers[name]))
    ta = load_teacher("torchaudio", str(tiny_teachers[name]))
    a, b = fs(WAV, LENS), ta(WAV, LENS)
    assert a.lengths.tolist() == b.lengths.tolist()
    for i, (x, y) in enumerate(zip(a.hidden, b.hidden)):
        torch.testing.assert_close(y, x, atol=1e-5, rtol=0, msg=f"layer {i}")
    if a.logits is not None:
        torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind,name", CASES)
def test_targets_do_not_depend_on_batch(kind, name, tiny_teachers, zoo_cache):
    t = _load(kind, name, tiny_teachers, zoo_cache)
    batched = t(WAV, LENS)
    for i in range(3):
        alone = t(WAV[i : i + 1, : LENS[i]], LENS[i : i + 1])
        n = int(alone.lengths[0])
        assert int(batched.lengths[i]) == n
        for h_b, h_a in zip(batched.hidden, alone.hidden):
            torch.testing.assert_close(h_b[i, :n], h_a[0], atol=1e-5, rtol=0)


def test_group_norm_cnn_batched_naively_differs(tiny_teachers):
    """Why per-utterance runs matter: HuBERT's group-norm CNN normalises over padded samples."""
    t = load_teacher("fairseq", str(tiny_teachers["fairseq_hubert"]))
    assert t.padding_sensitive
    naive = t._forward_batch(WAV, LENS)  # one padded batch, bypassing the per-utterance path
    alone = t(WAV[2:3, : LENS[2]], LENS[2:3])
    n = int(alone.lengths[0])
    assert (naive.hidden[-1][2, :n] - alone.hidden[-1][0]).abs().max() > 1e-3


@pytest.mark.parametrize("kind,name", [("fairseq", "fairseq_hubert"), ("torchaudio", "fairseq_w2v2"), ("espnet", "espnet")])
def test_frozen_eval_deterministic(kind, name, tiny_teachers, zoo_cache):
    t = _load(kind, name, tiny_teachers, zoo_cache)
    t.train()
    assert not any(m.training for m in t.modules())
    assert not any(p.requires_grad for p in t.parameters())
    a, b = t(WAV, LENS), t(WAV, LENS)
    assert a.hidden[-1].grad_fn is None
    for x, y in zip(a.hidden, b.hidden):
        assert torch.equal(x, y)
    if kind == "fairseq":
        assert t.w2v.encoder.layerdrop == 0.0  # the checkpoint was saved with encoder_layerdrop 0.05


def test_bad_input(tmp_path, tiny_teachers):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint" * 100)
    cases = [(("fairseq", str(tmp_path / "missing.pt")), "teacher_path=.*missing.pt: file not found"),
             (("fairseq", str(junk)), "teacher_path=.*junk.pt: not a readable fairseq checkpoint"),
             (("espnet", str(tmp_path / "missing.zip")), "teacher_path=.*missing.zip: file not found"),
             (("torchaudio", "resnet50"), "teacher_path='resnet50': not a torchaudio"),
             (("kaldi", "x"), "teacher_type='kaldi': unknown")]
    for args, msg in cases:
        with pytest.raises(KDConfigError, match=msg) as e:
            load_teacher(*args)
        assert "\n" not in str(e.value)
    t = load_teacher("fairseq", str(tiny_teachers["fairseq_w2v2"]))
    with pytest.raises(KDConfigError, match="empty audio"):
        t(torch.zeros(2, 100), torch.tensor([100, 0]))
