"""ESPnet ASR models (packed zip or espnet_model_zoo name) as frozen teachers.

The zip is unpacked by ``espnet_model_zoo.downloader.ModelDownloader`` (works offline for a
local file) and built with ``ASRTask.build_model_from_file``. Hidden states are captured with
hooks on ``encoder.encoders[i]``: ``hidden[0]`` is the input of the first block (after the
subsampling/positional encoding), ``hidden[i]`` the output of block ``i``; ``logits`` are the
CTC projection of the encoder output.
"""
from __future__ import annotations

import os
from typing import List, Optional

import torch
from torch import nn

from ..errors import KDConfigError, require
from .base import Teacher, TeacherOutput


def _first_tensor(x):
    while isinstance(x, (tuple, list)):
        x = x[0]
    return x


class EspnetTeacher(Teacher):
    """Frozen ``espnet2.asr.espnet_model.ESPnetASRModel``.

    Always runs utterance by utterance (``padding_sensitive``): ESPnet's conformer convolution
    modules see padded frames in a batch.
    """

    padding_sensitive = True

    def __init__(self, model: nn.Module, sample_rate: int = 16000):
        super().__init__()
        self.model = model
        self.sample_rate = sample_rate
        self.blocks = model.encoder.encoders
        self.num_layers = len(self.blocks)
        self.hidden_size = model.encoder.output_size()
        self.vocab_size = model.ctc.ctc_lo.out_features if getattr(model, "ctc", None) is not None else None
        self.freeze()
        with torch.no_grad():  # frame shift from the model itself: frames per second of output
            n1 = self._forward_batch(torch.zeros(1, sample_rate), torch.tensor([sample_rate])).lengths.item()
            n2 = self._forward_batch(torch.zeros(1, 3 * sample_rate), torch.tensor([3 * sample_rate])).lengths.item()
        self.frame_shift_ms = 2000.0 / (n2 - n1)

    def _forward_batch(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherOutput:
        captured: List[torch.Tensor] = []
        hooks = [self.blocks[0].register_forward_pre_hook(lambda m, a: captured.append(_first_tensor(a[0])))]
        hooks += [b.register_forward_hook(lambda m, a, out: captured.append(_first_tensor(out))) for b in self.blocks]
        try:
            enc, enc_len = self.model.encode(wav, lengths)
        finally:
            for h in hooks:
                h.remove()
        logits = self.model.ctc.ctc_lo(enc) if self.vocab_size else None
        return TeacherOutput(hidden=captured, lengths=enc_len, logits=logits, frame_shift_ms=getattr(self, "frame_shift_ms", 0.0))


def load_espnet_teacher(model: str, cachedir: Optional[str] = None) -> EspnetTeacher:
    """``model``: a packed ESPnet ASR zip (``espnet2.bin.pack asr``) or an espnet_model_zoo name."""
    from espnet_model_zoo.downloader import ModelDownloader

    is_file = model.endswith(".zip") or os.path.sep in model
    require(not is_file or os.path.isfile(model), f"teacher_path={model}: file not found; pass a zip made by 'espnet2.bin.pack asr' or a zoo name")
    try:
        files = ModelDownloader(cachedir or os.path.join(os.path.expanduser("~"), ".cache", "espnet_kd_zoo")).download_and_unpack(
            os.path.abspath(model) if is_file else model)
    except Exception as e:
        raise KDConfigError(f"teacher_path={model}: cannot unpack with espnet_model_zoo ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:120] if str(e) else ''}); pass a zip made by 'espnet2.bin.pack asr'") from None
    require("asr_train_config" in files, f"teacher_path={model}: not an ESPnet ASR model (no asr_train_config in the pack)")
    from espnet2.tasks.asr import ASRTask

    asr, args = ASRTask.build_model_from_file(files["asr_train_config"], files["asr_model_file"], "cpu")
    fs = int((getattr(args, "frontend_conf", None) or {}).get("fs", 16000))
    return EspnetTeacher(asr, sample_rate=fs)
