"""fairseq wav2vec 2.0 / HuBERT / CTC fine-tuned checkpoints as frozen teachers.

Loading goes through fairseq's own code: ``checkpoint_utils.load_checkpoint_to_cpu`` (inside
``torch.serialization.safe_globals`` so official checkpoints that pickle ``argparse.Namespace``,
fairseq ``Dictionary`` objects or numpy scalars load under torch's ``weights_only`` default),
``tasks.setup_task`` + ``task.load_state_dict(task_state)`` + ``task.build_model`` and a strict
``load_state_dict`` -- the steps of ``load_model_ensemble_and_task``.

Official checkpoints name task data / label directories that do not exist on this machine;
only the *sizes* of the dictionaries there matter for building the model, so the loader then
writes placeholder ``dict.<label>.txt`` files, sized from the checkpoint's weights, into a
temporary directory (``data_dir=`` points to real ones instead).
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
from typing import List, Optional, Tuple

import torch
from torch import nn

from ..errors import KDConfigError, require
from .base import Teacher, TeacherOutput, normalize_waveform
from .masked_norm import padding_aware_group_norm

logger = logging.getLogger(__name__)
N_SPECIAL = 4  # fairseq Dictionary: <s> <pad> </s> <unk>


def _allowed_globals() -> list:
    """What official fairseq checkpoints pickle besides tensors: all plain data containers."""
    import numpy as np
    from fairseq.data.dictionary import Dictionary

    core = getattr(np, "_core", None) or np.core
    scalar, reconstruct = core.multiarray.scalar, core.multiarray._reconstruct
    numeric = {type(np.dtype(c)) for c in np.typecodes["AllFloat"] + np.typecodes["AllInteger"] + "?"}  # Float64DType, ...
    return [argparse.Namespace, Dictionary, np.ndarray, np.dtype, *numeric, scalar, reconstruct,
            (scalar, "numpy.core.multiarray.scalar"), (reconstruct, "numpy.core.multiarray._reconstruct")]


def read_fairseq_checkpoint(path: str, option: str = "teacher_path") -> dict:
    """``checkpoint_utils.load_checkpoint_to_cpu(path)`` with the globals of official checkpoints allowed.

    Returns fairseq's state dict (``cfg`` as a ``DictConfig``, ``model`` weights, ...).
    """
    from fairseq import checkpoint_utils

    require(os.path.isfile(path), f"{option}={path}: file not found; pass an existing fairseq checkpoint (.pt)")
    # safe_globals() removes on exit everything it was given, also globals allowed before it was
    # entered (e.g. fairseq_kd's Dictionary): add only the missing ones.
    present = torch.serialization.get_safe_globals()
    extra = [g for g in _allowed_globals() if g not in present]
    try:
        with torch.serialization.safe_globals(extra):
            state = checkpoint_utils.load_checkpoint_to_cpu(path)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a readable checkpoint"
        hint = "re-download it or pass the right file"
        try:
            allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in _allowed_globals()}
            unsafe = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
            if unsafe:
                hint = f"it pickles objects outside the allow-list ({', '.join(unsafe[:5])}); re-save it with plain types"
        except Exception:  # noqa: BLE001 - not a zip checkpoint at all
            pass
        raise KDConfigError(f"{option}={path}: not a readable fairseq checkpoint ({type(e).__name__}); {hint}") from None
    require(isinstance(state, dict) and state.get("cfg") is not None and "model" in state,
            f"{option}={path}: no 'cfg'/'model' entries; not a fairseq model checkpoint")
    return state


def _dict_files(task_cfg) -> List[str]:
    """``dict.<label>.txt`` paths that ``tasks.setup_task(task_cfg)`` will read."""
    labels = task_cfg.get("labels")
    if not labels:
        return []
    labels = [labels] if isinstance(labels, str) else list(labels)
    folder = task_cfg.get("target_dictionary") or task_cfg.get("label_dir") or task_cfg.get("data") or ""
    return [os.path.join(str(folder), f"dict.{lab}.txt") for lab in labels]


def _placeholder_dicts(task_cfg, weights: dict, fine_tuned: bool, tmp: str, prefix: str = "") -> None:
    """Point ``task_cfg`` at ``tmp`` and write its dictionaries there, sized from ``weights``.

    Pre-training HuBERT: ``label_embs_concat`` rows = sum of dictionary sizes (hubert.py
    ``num_classes``). Fine-tuned CTC: ``w2v_encoder.proj`` rows = ``len(target_dictionary)``.
    """
    from omegaconf import open_dict

    with open_dict(task_cfg):
        task_cfg.data = tmp
        for key in ("label_dir", "target_dictionary"):
            if task_cfg.get(key) is not None:
                task_cfg[key] = tmp
    labels = task_cfg.get("labels")
    if not labels:
        return
    labels = [labels] if isinstance(labels, str) else list(labels)
    embs, proj = weights.get(prefix + "label_embs_concat"), weights.get("w2v_encoder.proj.weight")
    if fine_tuned and proj is not None:
        total = proj.size(0)
    elif embs is not None:
        total = embs.size(0)
    else:
        total = (N_SPECIAL + 1) * len(labels)
    for label in labels:  # label sets of unequal size cannot be told apart: split evenly
        with open(os.path.join(tmp, f"dict.{label}.txt"), "w") as f:
            f.writelines(f"sym{i} 1\n" for i in range(total // len(labels) - N_SPECIAL))


def _prepare_cfg(cfg, weights: dict, data_dir: Optional[str], tmp: str) -> None:
    """Make ``cfg`` buildable here: compat renames and data/label directories (in place)."""
    from omegaconf import open_dict

    from .fairseq_compat import buildable_model_name

    w2v_args = cfg.model.get("w2v_args")
    fine_tuned = w2v_args is not None or cfg.model.get("w2v_path") is not None
    name = buildable_model_name(cfg.model.get("_name"))
    if name != cfg.model.get("_name"):  # fairseq issue #4916: stock hubert_ctc cannot be built
        with open_dict(cfg):
            cfg.model._name = name
    if cfg.task.get("_name") == "audio_pretraining" and cfg.task.get("labels") and fine_tuned:
        # Pre-0.10 CTC checkpoints (e.g. wav2vec_small_960h.pt) name task audio_pretraining with
        # labels; here that task has no target_dictionary (fairseq_task.py: returns None) and
        # Wav2VecCtc.build_model takes len() of it. audio_finetuning is its successor.
        logger.info("task audio_pretraining with labels -> audio_finetuning")
        with open_dict(cfg):
            cfg.task._name = "audio_finetuning"
    tasks_cfgs = [(cfg.task, fine_tuned, "")]
    if w2v_args is not None and w2v_args.get("task") is not None:
        tasks_cfgs.append((w2v_args.task, False, "w2v_encoder.w2v_model."))
    missing = [t for t in tasks_cfgs if not all(os.path.isfile(p) for p in _dict_files(t[0]))]
    if data_dir is not None:
        with open_dict(cfg.task):
            cfg.task.data = data_dir
            for key in ("label_dir", "target_dictionary"):
                if cfg.task.get(key) is not None:
                    cfg.task[key] = data_dir
        # a fine-tuned HuBERT's pre-training label sets: only their sizes matter, and only until
        # remove_pretraining_modules drops the codebook (hubert_asr.py HubertEncoder)
        missing = [t for t in missing if t[0] is not cfg.task]
    elif not missing:
        return
    elif len(missing) < len(tasks_cfgs):
        missing = tasks_cfgs  # one placeholder folder for all, as the weights size them
    if missing:
        logger.info("task dictionaries of %s not found here; using placeholders sized from the weights", missing[0][0].get("data"))
    for task_cfg, ft, prefix in missing:
        _placeholder_dicts(task_cfg, weights, ft, tmp, prefix)
    if "data" in cfg.model:  # fine-tuned encoders copy model.data into w2v_args.task.data (wav2vec2_asr.py)
        with open_dict(cfg):
            cfg.model.data = cfg.task.data


def build_fairseq_model(path: str, data_dir: Optional[str] = None, state: Optional[dict] = None) -> Tuple[nn.Module, object]:
    """Build the checkpoint's model with fairseq's registries and load its weights (strict).

    Returns ``(model, cfg)``; ``model`` is in eval mode.
    """
    from fairseq import tasks

    state = read_fairseq_checkpoint(path) if state is None else state
    cfg, weights = state["cfg"], state["model"]
    require(data_dir is None or os.path.isdir(data_dir), f"data_dir={data_dir}: not a directory; pass the folder holding dict.<label>.txt")
    try:
        with tempfile.TemporaryDirectory(prefix="kd_fairseq_dicts_") as tmp:
            _prepare_cfg(cfg, weights, data_dir, tmp)
            task = tasks.setup_task(cfg.task, from_checkpoint=True)
            if state.get("task_state"):  # e.g. pickled dictionaries, as load_model_ensemble_and_task does
                task.load_state_dict(state["task_state"])
            model = task.build_model(cfg.model, from_checkpoint=True)
        model.load_state_dict(weights, strict=True, model_cfg=cfg.model)
    except KDConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - report one line naming the file
        msg = str(e).splitlines()[0][:160] if str(e) else ""
        raise KDConfigError(f"teacher_path={path}: fairseq cannot build this model ({type(e).__name__}: {msg}); "
                            "pass data_dir= with the task's dict.<label>.txt files or a wav2vec2/HuBERT checkpoint") from None
    return model.eval(), cfg


def _conv_lengths(lengths: torch.Tensor, convs: List[Tuple[int, int]]) -> torch.Tensor:
    """Frames of a stack of unpadded 1-d convs ``[(kernel, stride), ...]``: ``(L - k) // s + 1`` each."""
    for k, s in convs:
        lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
    return lengths


class FairseqTeacher(Teacher):
    """Frozen fairseq ``Wav2Vec2Model`` / ``HubertModel``, optionally inside a CTC model.

    ``hidden[i]`` (``i >= 1``) is ``layer_results[i - 1][0]`` of the transformer encoder (the
    layer's output ``x``; the other two items are attention weights and the FFN output before
    the residual, wav2vec2.py ``TransformerEncoder.extract_features``). ``hidden[0]`` is the
    input of ``encoder.layers[0]``: projected CNN features + positional conv, layer-normed when
    ``layer_norm_first`` is False. ``logits`` are the CTC projection of the final encoder output.

    Args:
        model: a fairseq wav2vec2/HuBERT model or a ``Wav2VecCtc``/``HubertCtc`` wrapping one.
        normalize: the checkpoint's ``task.normalize`` (per-utterance zero mean, unit variance).
    """

    def __init__(self, model: nn.Module, normalize: bool = False, sample_rate: int = 16000):
        super().__init__()
        self.model = model
        encoder = getattr(model, "w2v_encoder", None)
        self.w2v = encoder.w2v_model if encoder is not None else model
        self.proj = getattr(encoder, "proj", None)
        require(hasattr(self.w2v, "feature_extractor") and hasattr(self.w2v, "encoder"),
                f"fairseq model {type(self.w2v).__name__} is not wav2vec2/HuBERT; use teacher_type=espnet or torchaudio")
        self.w2v.encoder.layerdrop = 0.0
        self.normalize, self.sample_rate = bool(normalize), int(sample_rate)
        self.num_layers = len(self.w2v.encoder.layers)
        self.hidden_size = self.w2v.encoder.embedding_dim
        self.vocab_size = None if self.proj is None else self.proj.out_features
        self.convs = [(b[0].kernel_size[0], b[0].stride[0]) for b in self.w2v.feature_extractor.conv_layers]
        stride = 1
        for _, s in self.convs:
            stride *= s
        self.frame_shift_ms = 1000.0 * stride / self.sample_rate
        # extractor_mode == "default" normalises over time in the first conv block: batched with statistics over
        # each utterance's valid frames (masked_norm), so no utterance needs to run alone
        self.padding_sensitive = False
        # HuBERT maps a sample padding mask to frames by reshaping it (hubert.py forward_padding_mask),
        # which can mark one frame more valid than the conv length formula: give it frames directly.
        self.frame_level_mask = hasattr(self.w2v, "forward_padding_mask")
        self.freeze()

    def conv_blocks(self) -> List[nn.Module]:
        return list(self.w2v.feature_extractor.conv_layers)

    def prediction_layer(self) -> Optional[nn.Linear]:
        return self.proj

    def codebook(self, option: str = "codebook_teacher_path"):
        """``final_proj`` + ``label_embs_concat`` + ``logit_temp`` of a pre-trained ``HubertModel`` with one
        label set. Fine-tuned checkpoints (``remove_pretraining_modules`` dropped both) are refused."""
        from ..losses.hubert_disc import HubertCodebook

        proj, embs = getattr(self.w2v, "final_proj", None), getattr(self.w2v, "label_embs_concat", None)
        require(self.proj is None and proj is not None and embs is not None,
                f"{option}: {type(self.model).__name__} has no HuBERT codebook (final_proj + label_embs_concat); a fine-tuned "
                "checkpoint drops it: pass the pre-trained HuBERT checkpoint it was fine-tuned from as the codebook teacher")
        require(proj.out_features == embs.size(1), f"{option}: final_proj gives {proj.out_features} dims for codewords of "
                f"{embs.size(1)}; several label sets with untie_final_proj are not supported")
        return HubertCodebook(proj.weight, proj.bias, embs, float(self.w2v.logit_temp))

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """``(B,)`` samples -> ``(B,)`` frames (wav2vec2.py ``_get_feat_extract_output_lengths``)."""
        if hasattr(self.w2v, "_get_feat_extract_output_lengths"):
            return self.w2v._get_feat_extract_output_lengths(lengths)
        return _conv_lengths(lengths, self.convs)

    def _forward_batch(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherOutput:
        """``wav (B, S)``, ``lengths (B,)`` -> hidden ``num_layers + 1 x (B, T, D)``, logits ``(B, T, V)``."""
        frames = self.checked_frames(lengths)
        if self.normalize:
            wav = normalize_waveform(wav, lengths)
        if self.frame_level_mask:
            n = int(_conv_lengths(torch.tensor(wav.size(1)), self.convs))
            pad = torch.arange(n)[None, :] >= frames[:, None]
        else:
            pad = torch.arange(wav.size(1))[None, :] >= lengths[:, None]
        got = {}

        def grab_input(module, args):  # hooks return None: a value would replace args / output
            got["in"] = args[0]

        def grab_output(module, args, out):
            got["out"] = out

        enc = self.w2v.encoder
        hooks = [enc.layers[0].register_forward_pre_hook(grab_input), enc.register_forward_hook(grab_output)]
        try:
            # HuBERT's extract_features drops layer_results (hubert.py forward: ``x, _ = self.encoder``),
            # so both are read from the encoder's own return value (x, layer_results).
            with padding_aware_group_norm(self.conv_blocks(), lengths):
                self.w2v.extract_features(wav, padding_mask=pad if bool(pad.any()) else None, mask=False)
        finally:
            for h in hooks:
                h.remove()
        x, layer_results = got["out"]
        require(len(layer_results) == self.num_layers, f"fairseq encoder {type(enc).__name__} returned {len(layer_results)} "
                f"layer results for {self.num_layers} layers (conformer encoders only return them per target layer); unsupported")
        t = x.size(1)
        hidden = [got["in"].transpose(0, 1)[:, :t]]  # T x B x C, padded to required_seq_len_multiple
        hidden += [res[0].transpose(0, 1) for res in layer_results]
        logits = self.proj(x) if self.proj is not None else None
        return TeacherOutput(hidden=hidden, lengths=frames.clamp(max=t), logits=logits, frame_shift_ms=self.frame_shift_ms)


def load_fairseq_teacher(path: str, data_dir: Optional[str] = None, state: Optional[dict] = None) -> FairseqTeacher:
    """Load a fairseq ``wav2vec2`` / ``hubert`` / ``wav2vec_ctc`` (or ``hubert_ctc``) checkpoint.

    Args:
        path: the ``.pt`` file.
        data_dir: folder with the task's ``dict.<label>.txt`` (overrides ``cfg.task.data`` and
            ``label_dir``); by default the checkpoint's own, or placeholders when absent.
        state: the checkpoint as :func:`read_fairseq_checkpoint` returned it, if already read.
    """
    model, cfg = build_fairseq_model(path, data_dir, state)
    inner = model.w2v_encoder.w2v_model if hasattr(model, "w2v_encoder") else model
    require(hasattr(inner, "feature_extractor") and hasattr(inner, "encoder"),
            f"teacher_path={path}: model {type(model).__name__} is not a wav2vec2/HuBERT model; use teacher_type=espnet or torchaudio")
    return FairseqTeacher(model, normalize=bool(cfg.task.get("normalize", False)),
                          sample_rate=int(cfg.task.get("sample_rate", 16000)))
