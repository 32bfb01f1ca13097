"""Hugging Face teachers: transformers' own hidden states, batch invariance, fairseq parity, bad input."""
import json

import pytest
import torch

from kd_core.errors import KDConfigError
from kd_core.teachers import load_teacher

import transformers  # noqa: E402  (installed by tools/install.sh)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
MODELS = {  # name: (config class, model class, config overrides)
    "hubert_base": ("HubertConfig", "HubertModel", {}),
    "wav2vec2_large_ctc": ("Wav2Vec2Config", "Wav2Vec2ForCTC", dict(feat_extract_norm="layer", do_stable_layer_norm=True,
                                                                    conv_bias=True, vocab_size=12)),
    "wavlm_base_ctc": ("WavLMConfig", "WavLMForCTC", dict(vocab_size=9)),
}



@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    out = {}
    for name, (cfg_cls, model_cls, extra) in MODELS.items():
        torch.manual_seed(0)
        model = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(**TINY, **extra)).eval()
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        out[name] = (path, model)
    return out


WAV = torch.randn(3, 9000, generator=torch.Generator().manual_seed(1)) * 0.1
LENS = torch.tensor([9000, 5200, 7100])


@pytest.mark.parametrize("name", list(MODELS))
def test_hidden_states_equal_transformers_own(name, hf_models):
    path, model = hf_models[name]
    teacher = load_teacher("huggingface", str(path))
    assert not teacher.padding_sensitive  # group-norm CNNs too: batched, statistics over valid frames
    out = teacher(WAV, LENS)
    base = getattr(model, model.base_model_prefix) if hasattr(model, "lm_head") else model
    assert len(out.hidden) == 3 and out.frame_shift_ms == 20.0
    for i, n in enumerate(LENS.tolist()):
        with torch.no_grad():
            ref = model(WAV[i:i + 1, :n], output_hidden_states=True)
        t = int(out.lengths[i])
        assert t == int(base._get_feat_extract_output_lengths(torch.tensor(n)))
        for k, h in enumerate(ref.hidden_states):  # batched teacher == transformers on the utterance alone
            scale = max(1.0, float(h.abs().max()))
            torch.testing.assert_close(out.hidden[k][i, :t], h[0, :t], rtol=0, atol=1e-5 * scale * 4)
        if hasattr(model, "lm_head"):
            torch.testing.assert_close(out.logits[i, :t], ref.logits[0, :t], rtol=0, atol=1e-5 * max(1.0, float(ref.logits.abs().max())) * 4)
        else:
            assert out.logits is None


def test_layerdrop_off_and_frozen(hf_models, tmp_path):
    path, model = hf_models["hubert_base"]
    cfg = json.loads((path / "config.json").read_text())
    cfg["layerdrop"] = 0.9
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    teacher = load_teacher("huggingface", str(tmp_path))
    teacher.train()
    a, b = teacher(WAV[:1], LENS[:1]), teacher(WAV[:1], LENS[:1])
    assert not teacher.training and all(torch.equal(x, y) for x, y in zip(a.hidden, b.hidden))
    assert not any(p.requires_grad for p in teacher.parameters())


def test_same_targets_as_the_fairseq_checkpoint_it_was_converted_from(tiny_teachers, tmp_path):
    from kd_core.teachers.hf_convert import convert_fairseq_to_hf

    for name in ("fairseq_hubert", "fairseq_w2v2_ctc"):
        fs = load_teacher("fairseq", str(tiny_teachers[name]))
        out = convert_fairseq_to_hf(str(tiny_teachers[name]), str(tmp_path / name))
        hf = load_teacher("huggingface", str(out))
        a, b = fs(WAV, LENS), hf(WAV, LENS)
        assert torch.equal(a.lengths, b.lengths) and len(a.hidden) == len(b.hidden)
        for k, (x, y) in enumerate(zip(a.hidden, b.hidden)):
            for i, t in enumerate(a.lengths.tolist()):
                torch.testing.assert_close(y[i, :t], x[i, :t], rtol=0, atol=1e-5 * max(1.0, float(x.abs().max())) * 4,
                                           msg=lambda m: f"{name} layer {k}: {m}")
        assert (a.logits is None) == (b.logits is None)
        if a.logits is not None:
            torch.testing.assert_close(b.logits, a.logits, rtol=0, atol=1e-5 * max(1.0, float(a.logits.abs().max())) * 4)


def test_bad_input_one_line(hf_models, tmp_path):
    with pytest.raises(KDConfigError, match="no config.json"):
        load_teacher("huggingface", str(tmp_path))
    with pytest.raises(KDConfigError, match="local Hugging Face cache"):
        load_teacher("huggingface", "facebook/hubert-large-ls960-ft")
    path, _ = hf_models["hubert_base"]
    cfg = json.loads((path / "config.json").read_text())
    cfg["model_type"] = "whisper"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(KDConfigError, match="model_type 'whisper' is not supported"):
        load_teacher("huggingface", str(tmp_path))
    cfg["model_type"] = "hubert"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(KDConfigError, match="no model.safetensors"):
        load_teacher("huggingface", str(tmp_path))
