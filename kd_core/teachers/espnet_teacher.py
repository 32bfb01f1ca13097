"""ESPnet ASR models (packed zip or espnet_model_zoo name) as frozen teachers.

The model is unpacked by ``espnet_model_zoo.downloader.ModelDownloader.download_and_unpack``
(offline for a local zip) and built with ``ASRTask.build_model_from_file``. Waveforms go
through the model's own ``encode`` (frontend + normalize + encoder). Hidden states come from
hooks on ``encoder.encoders[i]``: ``hidden[0]`` is the input of the first block (after the
subsampling and positional encoding), ``hidden[i]`` the output of block ``i`` (before the
final ``after_norm``); ``logits`` are ``ctc.ctc_lo`` of the encoder output.
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Optional

import torch
from torch import nn

from ..errors import KDConfigError, require
from ..hooks import capture_layers, first_tensor
from ..streaming import measure_frame_shift_ms
from .base import Teacher, TeacherOutput

logger = logging.getLogger(__name__)
# espnet/nets/pytorch_backend/transformer/subsampling.py: time reduction of each input layer
SUBSAMPLING = {"Conv1dSubsampling1": 1, "Conv1dSubsampling2": 2, "Conv1dSubsampling3": 3, "Conv2dSubsampling": 4,
               "Conv2dSubsampling1": 1, "Conv2dSubsampling2": 2, "Conv2dSubsampling6": 6, "Conv2dSubsampling8": 8,
               "Linear": 1, "Sequential": 1, "Embedding": 1}


class EspnetTeacher(Teacher):
    """Frozen ``espnet2.asr.espnet_model.ESPnetASRModel``.

    Always runs utterance by utterance (``padding_sensitive``): the conformer convolution
    module sees padded frames (espnet/nets/pytorch_backend/conformer/encoder_layer.py calls
    ``conv_module(x)`` without the mask) and the centred STFT reflects at the true end only
    when the utterance is alone.
    """

    padding_sensitive = True

    def __init__(self, model: nn.Module, sample_rate: int = 16000):
        super().__init__()
        self.model = model
        self.sample_rate = int(sample_rate)
        require(getattr(model, "encoder", None) is not None and hasattr(model.encoder, "encoders"),
                f"ESPnet encoder {type(getattr(model, 'encoder', None)).__name__} has no 'encoders' block list; unsupported")
        require(getattr(model, "frontend", None) is not None,
                "ESPnet model has no frontend (trained on pre-extracted features); a teacher needs a waveform frontend")
        self.blocks = model.encoder.encoders
        self.num_layers = len(self.blocks)
        self.hidden_size = model.encoder.output_size()
        self.ctc_lo = model.ctc.ctc_lo if getattr(model, "ctc", None) is not None else None
        self.vocab_size = None if self.ctc_lo is None else self.ctc_lo.out_features
        # a transducer (--decoder transducer, e.g. trained with asr_kd): soft RNN-T targets through its own decoder + joint
        self.is_transducer = bool(getattr(model, "use_transducer_decoder", False))
        self.blank_id = int(getattr(model, "blank_id", 0))
        if self.is_transducer:
            self.vocab_size = model.joint_network.lin_out.out_features
        stft = getattr(model.frontend, "stft", None)  # a centred STFT reflect-pads n_fft // 2 samples each side
        self.min_samples = stft.n_fft // 2 + 1 if getattr(stft, "center", False) else 1
        self.freeze()
        self.frame_shift_ms = self._frame_shift_ms()

    def _frame_shift_ms(self) -> float:
        """Frontend hop x encoder subsampling (e.g. 10 ms x 4 = 40 ms); measured if either is unknown."""
        hop = getattr(self.model.frontend, "hop_length", None) if self.model.frontend is not None else None
        factor = SUBSAMPLING.get(type(getattr(self.model.encoder, "embed", None)).__name__)
        if hop is not None and factor is not None:
            return 1000.0 * hop * factor / self.sample_rate
        logger.info("frame shift of %s measured from its output lengths", type(self.model.encoder).__name__)
        return measure_frame_shift_ms(lambda n: int(self._forward_batch(torch.zeros(1, n), torch.tensor([n])).lengths),
                                      self.sample_rate)

    def _forward_batch(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherOutput:
        """``wav (B, S)``, ``lengths (B,)`` -> hidden ``num_layers + 1 x (B, T, D)``, logits ``(B, T, V)``."""
        from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError

        require(int(lengths.min()) >= self.min_samples, f"teacher input: utterance of {int(lengths.min())} samples is too "
                f"short for the ESPnet frontend's centred STFT (needs {self.min_samples}); drop it")
        with capture_layers(self.blocks) as captured:
            try:
                enc, enc_len = self.model.encode(wav, lengths)
            except TooShortUttError as e:
                raise KDConfigError(f"teacher input: utterance of {int(lengths.min())} samples is too short for the ESPnet "
                                    f"encoder's subsampling ({e.actual_size} frames, needs at least {e.limit}); drop it") from None
        enc = first_tensor(enc)  # (out, intermediate CTC outputs) with interctc
        logits = self.ctc_lo(enc) if self.ctc_lo is not None else None
        return TeacherOutput(hidden=captured, lengths=enc_len, logits=logits, frame_shift_ms=getattr(self, "frame_shift_ms", 0.0))


    def _transducer_encode(self, wav: torch.Tensor, lengths: torch.Tensor):
        if not self.is_transducer:
            return super()._transducer_encode(wav, lengths)
        enc, enc_len = self.model.encode(wav, lengths)
        return first_tensor(enc), enc_len

    def _transducer_predict(self, targets: torch.Tensor) -> torch.Tensor:
        """ESPnet's decoder input: blank (the start symbol) then the targets (blank-padded, as ``get_transducer_task_io``)."""
        blank = self.model.blank_id
        decoder_in = torch.cat([targets.new_full((targets.size(0), 1), blank), targets.long()], dim=1)
        self.model.decoder.set_device(targets.device)
        return self.model.decoder(decoder_in)

    def _transducer_joint(self):
        return self.model.joint_network


def _unpack(model: str, cachedir: Optional[str]) -> dict:
    from espnet_model_zoo.downloader import ModelDownloader

    root = cachedir or os.path.join(os.path.expanduser("~"), ".cache", "espnet_kd_zoo")
    if os.path.exists(model):
        # ModelDownloader caches a local file by its path only and then skips unpacking
        # (downloader.py unpack_local_file): key the cache on size + mtime too, so a rewritten
        # zip at the same path is not served stale.
        st = os.stat(model)
        key = hashlib.sha1(f"{os.path.abspath(model)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
        return ModelDownloader(os.path.join(root, "local", key)).download_and_unpack(os.path.abspath(model))
    return ModelDownloader(root).download_and_unpack(model)


def check_plain_weights(model_file: str, option: str, trust_pickle: bool) -> None:
    """Refuse (one line) a model file that needs full unpickling: ESPnet's ``build_model_from_file`` reads it with
    ``torch.load(weights_only=False)``, which runs whatever the pickle says. Packed ESPnet models are plain state
    dicts, so ``weights_only=True`` reads every genuine one; ``trust_pickle`` is the explicit, warned opt-in."""
    import torch

    if trust_pickle:
        logger.warning("%s: trust_pickle=true: %s is unpickled in full (it can run code); only for files you trust",
                       option, model_file)
        return
    try:
        torch.load(model_file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - anything weights_only cannot read is refused
        unsafe = ""
        try:
            unsafe = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(model_file)[:5])
        except Exception:  # noqa: BLE001 - not a zip checkpoint
            pass
        raise KDConfigError(f"{option}: {model_file} is not a plain state dict ({type(e).__name__}"
                            f"{': pickles ' + unsafe if unsafe else ''}); loading it would unpickle arbitrary objects. "
                            f"Re-save it as a state dict, or pass trust_pickle=true (teacher_conf) if you trust the file") from None


def load_espnet_teacher(model: str, cachedir: Optional[str] = None, task_class=None, trust_pickle: bool = False) -> EspnetTeacher:
    """Load an ESPnet ASR model as a frozen teacher.

    Args:
        model: a zip made by ``python -m espnet2.bin.pack asr ...`` or an espnet_model_zoo name
            (downloaded on first use).
        cachedir: where the model is unpacked (default ``~/.cache/espnet_kd_zoo``).
        task_class: the ESPnet task that builds the model (default ``ASRTask``; the ESPnet adapter
            passes its ``ASRKDTask`` for students trained with it, e.g. a two-stage teacher).
        trust_pickle: read a model file that is more than a state dict (:func:`check_plain_weights`).
    """
    model = str(model)
    looks_like_file = model.endswith((".zip", ".tar.gz", ".tgz")) or os.path.sep in model
    require(os.path.exists(model) or not looks_like_file,
            f"teacher_path={model}: file not found; pass a zip made by 'espnet2.bin.pack asr' or an espnet_model_zoo name")
    require(not os.path.isdir(model), f"teacher_path={model}: is a directory; pass the packed zip made by 'espnet2.bin.pack asr'")
    try:
        files = _unpack(model, cachedir)
    except Exception as e:  # noqa: BLE001 - corrupt archive, unknown zoo name, no network
        msg = str(e).splitlines()[0][:120] if str(e) else ""
        raise KDConfigError(f"teacher_path={model}: cannot unpack with espnet_model_zoo ({type(e).__name__}: {msg}); "
                            "pass a zip made by 'espnet2.bin.pack asr'") from None
    require("asr_train_config" in files and "asr_model_file" in files,
            f"teacher_path={model}: not an ESPnet ASR model (no asr_train_config/asr_model_file in the pack)")
    check_plain_weights(files["asr_model_file"], f"teacher_path={model}", trust_pickle)
    if task_class is None:
        from espnet2.tasks.asr import ASRTask as task_class

    try:
        asr, args = task_class.build_model_from_file(files["asr_train_config"], files["asr_model_file"], "cpu")
    except Exception as e:  # noqa: BLE001
        msg = str(e).splitlines()[0][:160] if str(e) else ""
        raise KDConfigError(f"teacher_path={model}: ESPnet cannot build the model ({type(e).__name__}: {msg}); "
                            "pack it with the ESPnet version installed here") from None
    fs = (getattr(args, "frontend_conf", None) or {}).get("fs", 16000)
    if isinstance(fs, str):  # ESPnet accepts "16k" (espnet2/asr/frontend/default.py)
        import humanfriendly

        fs = humanfriendly.parse_size(fs)
    return EspnetTeacher(asr.eval(), sample_rate=int(fs))
