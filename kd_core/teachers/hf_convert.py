"""Write a fairseq wav2vec 2.0 / HuBERT checkpoint (pre-trained or CTC fine-tuned) in the Hugging Face
``transformers`` layout, so the same teacher can be distilled from either format.

    python -m kd_core.teachers.hf_convert --fairseq zoo/hubert_mini_ctc/hubert_mini_ctc.pt \
        --dict zoo/hubert_mini_ctc/dict.ltr.txt --out zoo/hubert_mini_ctc/hf

The fairseq model is built by fairseq's own code (:func:`build_fairseq_model`); its weights are renamed
onto the matching ``transformers`` class (``HubertModel``/``Wav2Vec2Model`` or ``*ForCTC``) and loaded
strictly, then written with ``save_pretrained`` (``model.safetensors``). HuBERT's pre-training head
(``final_proj``, ``label_embs_concat``) has no ``transformers`` counterpart and is not written: the
discriminative loss needs the fairseq file.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import nn

from ..errors import KDConfigError, require

#: fairseq name (regex) -> transformers name, for the encoder of wav2vec 2.0 and HuBERT
_RENAMES = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.0\.2\.(weight|bias)", r"feature_extractor.conv_layers.0.layer_norm.\1"),  # group norm
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),  # layer norm
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    (r"encoder\.pos_conv\.0\.bias", r"encoder.pos_conv_embed.conv.bias"),
    (r"encoder\.pos_conv\.0\.(?:weight_g|parametrizations\.weight\.original0)", r"encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.(?:weight_v|parametrizations\.weight\.original1)", r"encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(k|v|q|out)_proj\.(weight|bias)", r"encoder.layers.\1.attention.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
]
#: fairseq pre-training modules with no transformers counterpart (and the training-only mask embedding)
_DROPPED = re.compile(r"(final_proj|label_embs_concat|quantizer|project_q|target_glu|mask_emb)\b")


def rename_fairseq_weights(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """fairseq encoder weights -> ``transformers`` names (pre-training heads dropped); unknown names raise."""
    out = {}
    for key, value in state.items():
        if _DROPPED.match(key):
            continue
        for pat, rep in _RENAMES:
            if re.fullmatch(pat, key):
                out[re.sub(pat, rep, key)] = value
                break
        else:
            raise KDConfigError(f"fairseq weight {key}: no transformers counterpart known; only wav2vec2/HuBERT encoders convert")
    return out


def hf_config(w2v: nn.Module, vocab_size: Optional[int], kind: str):
    """The ``transformers`` config describing fairseq model ``w2v`` (read from its modules)."""
    import transformers

    convs = [b[0] for b in w2v.feature_extractor.conv_layers]
    group = any(isinstance(m, nn.GroupNorm) for m in w2v.feature_extractor.conv_layers[0])
    enc, layer = w2v.encoder, w2v.encoder.layers[0]
    pos = enc.pos_conv[0]
    require(getattr(layer, "activation_fn", None) in (torch.nn.functional.gelu,) or "gelu" in str(layer.activation_fn),
            "fairseq model: only GELU encoders convert (transformers' hidden_act='gelu')")
    cls = transformers.HubertConfig if kind == "hubert" else transformers.Wav2Vec2Config
    return cls(hidden_size=enc.embedding_dim, num_hidden_layers=len(enc.layers), num_attention_heads=layer.self_attn.num_heads,
               intermediate_size=layer.fc1.out_features, hidden_act="gelu", layer_norm_eps=enc.layer_norm.eps,
               conv_dim=tuple(c.out_channels for c in convs), conv_kernel=tuple(c.kernel_size[0] for c in convs),
               conv_stride=tuple(c.stride[0] for c in convs), conv_bias=convs[0].bias is not None,
               feat_extract_norm="group" if group else "layer", do_stable_layer_norm=bool(enc.layer_norm_first),
               num_conv_pos_embeddings=pos.kernel_size[0], num_conv_pos_embedding_groups=pos.groups,
               vocab_size=vocab_size or 32, layerdrop=0.0, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
               feat_proj_dropout=0.0, final_dropout=0.0, mask_time_prob=0.0, apply_spec_augment=False)


def convert_fairseq_to_hf(checkpoint: str, out: str, dict_file: Optional[str] = None) -> Path:
    """Write ``checkpoint`` (fairseq) as a ``transformers`` folder ``out``; returns it.

    ``dict_file``: the CTC model's ``dict.<label>.txt``; its symbols (after fairseq's 4 specials) go to
    ``vocab.json`` in output order, so ``*ForCTC`` logits index the same tokens.
    """
    import transformers

    from .fairseq_teacher import build_fairseq_model

    model, cfg = build_fairseq_model(checkpoint)
    encoder = getattr(model, "w2v_encoder", None)
    w2v = encoder.w2v_model if encoder is not None else model
    proj = getattr(encoder, "proj", None)
    kind = "hubert" if type(w2v).__name__ == "HubertModel" else "wav2vec2"
    require(type(w2v).__name__ in ("HubertModel", "Wav2Vec2Model"), f"{checkpoint}: {type(w2v).__name__} is not a wav2vec2/HuBERT model")
    config = hf_config(w2v, proj.out_features if proj is not None else None, kind)
    names = {"hubert": ("HubertModel", "HubertForCTC"), "wav2vec2": ("Wav2Vec2Model", "Wav2Vec2ForCTC")}[kind]
    hf = getattr(transformers, names[1 if proj is not None else 0])(config)
    state = rename_fairseq_weights(w2v.state_dict())
    if proj is not None:
        state = {f"{hf.base_model_prefix}.{k}": v for k, v in state.items()}
        state.update({"lm_head.weight": proj.weight, "lm_head.bias": proj.bias})
    missing, unexpected = hf.load_state_dict(state, strict=False)
    require(not missing and not unexpected, f"{checkpoint}: weights do not fit {type(hf).__name__} (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})")
    out_dir = Path(out)
    hf.eval().save_pretrained(out_dir, safe_serialization=True)
    pre = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, "padding_value": 0.0,
           "sampling_rate": int(cfg.task.get("sample_rate", 16000)), "do_normalize": bool(cfg.task.get("normalize", False)),
           "return_attention_mask": not any(isinstance(m, nn.GroupNorm) for m in w2v.feature_extractor.conv_layers[0])}
    (out_dir / "preprocessor_config.json").write_text(json.dumps(pre, indent=1) + "\n")
    if dict_file is not None:
        syms = ["<s>", "<pad>", "</s>", "<unk>"] + [line.split()[0] for line in Path(dict_file).read_text().splitlines() if line.strip()]
        require(proj is None or len(syms) == proj.out_features, f"{dict_file}: {len(syms)} symbols for {proj.out_features} outputs")
        (out_dir / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(syms)}, indent=1) + "\n")
    return out_dir


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fairseq", required=True, help="fairseq checkpoint (.pt)")
    p.add_argument("--out", required=True, help="output folder (config.json, model.safetensors, ...)")
    p.add_argument("--dict", default=None, help="dict.<label>.txt of a CTC checkpoint (written as vocab.json)")
    a = p.parse_args(argv)
    try:
        convert_fairseq_to_hf(a.fairseq, a.out, a.dict)
    except KDConfigError as e:
        raise SystemExit(f"hf_convert: error: {e}") from None


if __name__ == "__main__":
    main()
