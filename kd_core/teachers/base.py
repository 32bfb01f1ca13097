"""Teacher interface: a frozen model that maps waveforms to all hidden layers.

Every loader (fairseq, torchaudio, ESPnet) returns a :class:`Teacher`. Targets are exact:
the teacher stays in eval mode with layer-drop off whatever ``.train()`` is called with, and
runs utterance by utterance when its computation is padding-sensitive (e.g. a waveform CNN
with group normalisation over time), so an utterance's targets never depend on its batch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from ..errors import KDConfigError, require

log = logging.getLogger(__name__)

#: ``compute_dtype`` loader option -> the autocast dtype the teacher computes in (targets are returned as float32)
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TeacherOutput:
    """Teacher targets.

    Attributes:
        hidden: ``num_layers + 1`` tensors ``(B, T, D)``: index 0 is the input to the first
            transformer/conformer layer (after the front-end and projection), index ``i`` the
            output of layer ``i``.
        lengths: ``(B,)`` valid frames per utterance.
        logits: ``(B, T, V)`` prediction-layer logits (CTC head) or ``None``.
        frame_shift_ms: stride of ``hidden`` in milliseconds (20 for wav2vec2/HuBERT).
    """

    hidden: List[torch.Tensor]
    lengths: torch.Tensor
    logits: Optional[torch.Tensor] = None
    frame_shift_ms: float = 20.0


class Teacher(nn.Module):
    """Frozen teacher. Subclasses implement :meth:`_forward_batch`.

    Args:
        padding_sensitive: when ``True`` each utterance is run alone (batch of one) so that
            normalisation over time never sees another utterance's padding.
        sample_rate: expected input sample rate in Hz.
    """

    num_layers: int = 0
    hidden_size: int = 0
    vocab_size: Optional[int] = None
    frame_shift_ms: float = 20.0
    sample_rate: int = 16000
    padding_sensitive: bool = True
    compute_dtype: torch.dtype = torch.float32
    #: a transducer (prediction network + joiner; ``vocab_size`` is then the joiner's): soft RNN-T targets
    is_transducer: bool = False
    blank_id: int = 0

    def set_compute_dtype(self, name: str, option: str = "compute_dtype") -> "Teacher":
        """Compute targets under ``torch.autocast`` in ``name`` (``float32``, ``bfloat16``, ``float16``): matrix
        products and convolutions in that dtype, normalisations and softmax in float32; targets come back as
        float32. ``bfloat16`` halves the teacher's cost on CPUs with AVX512-BF16/AMX and is emulated (slower)
        elsewhere. The tolerance against float32 is tested (``tests/core/test_teacher_dtype.py``)."""
        require(name in COMPUTE_DTYPES, f"{option}={name!r}: unknown teacher dtype; choose one of {', '.join(COMPUTE_DTYPES)}")
        if name == "bfloat16" and not bool(getattr(torch._C._cpu, "_is_avx512_bf16_supported", lambda: False)()):
            log.warning("%s=bfloat16: this CPU has no native bf16 arithmetic; the teacher will run slower than float32", option)
        self.compute_dtype = COMPUTE_DTYPES[name]
        return self

    def freeze(self) -> "Teacher":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> "Teacher":  # noqa: D401 - always eval
        """Teachers never leave eval mode (dropout and layer-drop stay off)."""
        return super().train(False)

    def _forward_batch(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherOutput:
        raise NotImplementedError

    def conv_blocks(self) -> List[nn.Module]:
        """The waveform CNN's blocks in order (each holds one ``Conv1d``), ``[]`` if there is none."""
        return []

    def prediction_layer(self) -> Optional[nn.Linear]:
        """The CTC output layer producing ``logits``, or ``None``."""
        return None

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """``(B,)`` samples -> ``(B,)`` frames (waveform-CNN teachers)."""
        raise NotImplementedError

    def checked_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """:meth:`output_lengths`, refusing (one line) an utterance shorter than the CNN's receptive field."""
        frames = self.output_lengths(lengths)
        require(bool((frames > 0).all()), f"teacher input: utterance of {int(lengths.min())} samples is shorter than "
                "the teacher's CNN receptive field; drop it or pad it")
        return frames

    def codebook(self, option: str = "codebook_teacher_path"):
        """The pre-trained HuBERT codebook (:class:`~kd_core.losses.hubert_disc.HubertCodebook`) the
        discriminative loss scores against; teachers without one raise a one-line error naming ``option``."""
        raise KDConfigError(f"{option}: a {type(self).__name__} has no HuBERT codebook; the HuBERT discriminative loss "
                            f"needs a pre-trained fairseq HuBERT checkpoint (with final_proj and label_embs_concat) there")

    def _transducer_encode(self, wav: torch.Tensor, lengths: torch.Tensor):
        """Transducer teachers: ``(enc (B, T, H), lengths (B,))``, the encoder output the joiner reads."""
        raise KDConfigError(f"a {type(self).__name__} is not a transducer: soft RNN-T targets (kd_loss rnnt) need a "
                            "transducer teacher; a CTC teacher teaches through hard targets (python -m kd_core.pseudo_label)")

    def _transducer_predict(self, targets: torch.Tensor) -> torch.Tensor:
        """Transducer teachers: ``targets (B, U)`` -> prediction-network output ``(B, U + 1, H')``."""
        raise NotImplementedError

    def _transducer_joint(self) -> nn.Module:
        raise NotImplementedError

    def transducer_joint(self) -> nn.Module:
        """Transducer teachers: the joint network (:data:`~kd_core.losses.rnnt_kd.Joint`), frozen."""
        return self._transducer_joint()

    def transducer_encode(self, wav: torch.Tensor, lengths: torch.Tensor):
        """Transducer teachers: ``(enc (B, T, H), lengths (B,))`` without gradient, float32, utterance by utterance
        when :attr:`padding_sensitive`."""
        require(wav.dim() == 2, f"teacher input: expected (B, samples) waveforms, got shape {tuple(wav.shape)}")
        with torch.no_grad():
            if not self.padding_sensitive or wav.size(0) == 1:
                enc, enc_lengths = self._transducer_encode(wav, lengths)
            else:
                outs = [self._transducer_encode(wav[i:i + 1, :int(lengths[i])], lengths[i:i + 1]) for i in range(wav.size(0))]
                enc = nn.utils.rnn.pad_sequence([e[0, :int(n[0])] for e, n in outs], batch_first=True)
                enc_lengths = torch.cat([n for _, n in outs])
        return enc.float(), enc_lengths

    def transducer_predict(self, targets: torch.Tensor) -> torch.Tensor:
        """Transducer teachers: prediction-network output ``(B, U + 1, H')`` after the start symbol and each token of
        ``targets (B, U)``, without gradient (prediction networks are causal over tokens: padding is harmless)."""
        with torch.no_grad():
            return self._transducer_predict(targets).float()

    def transducer_lattice(self, wav: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                           target_lengths: torch.Tensor):
        """The teacher's :class:`~kd_core.losses.rnnt_kd.TransducerLattice` on the reference ``targets (B, U)``
        (padding any value past ``target_lengths``): :meth:`transducer_encode` + :meth:`transducer_predict`."""
        from ..losses.rnnt_kd import TransducerLattice

        enc, enc_lengths = self.transducer_encode(wav, lengths)
        return TransducerLattice(self.transducer_joint(), enc, enc_lengths, self.transducer_predict(targets))

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> TeacherOutput:
        """Compute targets under ``torch.inference_mode()`` (and autocast to :attr:`compute_dtype`).

        Args:
            wav: ``(B, S)`` float waveforms at :attr:`sample_rate`, zero-padded.
            lengths: ``(B,)`` valid samples.
        Returns:
            :class:`TeacherOutput` with ``B`` rows, padded to the longest utterance.
        """
        require(wav.dim() == 2, f"teacher input: expected (B, samples) waveforms, got shape {tuple(wav.shape)}")
        require(bool((lengths > 0).all()), "teacher input: empty audio (0 samples) in batch; drop empty utterances from the data")
        cast = self.compute_dtype != torch.float32
        with torch.inference_mode(), torch.autocast(wav.device.type, dtype=self.compute_dtype, enabled=cast):
            if not self.padding_sensitive or wav.size(0) == 1:
                out = self._forward_batch(wav, lengths)
            else:
                out = _pad_outputs([self._forward_batch(wav[i : i + 1, : int(lengths[i])], lengths[i : i + 1])
                                    for i in range(wav.size(0))])
        # inference tensors cannot enter a loss's autograd graph: copy them out (float32) as ordinary tensors
        return TeacherOutput(hidden=[h.to(torch.float32, copy=True) for h in out.hidden], lengths=out.lengths.clone(),
                             logits=None if out.logits is None else out.logits.to(torch.float32, copy=True),
                             frame_shift_ms=out.frame_shift_ms)


def normalize_waveform(wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its valid samples only; padding stays 0.

    What fairseq's audio dataset does per file when ``task.normalize=True`` (wav2vec2 Large,
    HuBERT Large): computing it over a padded batch would leak padding into the targets.
    ``wav (B, S)``, ``lengths (B,)`` -> ``(B, S)``.
    """
    valid = torch.arange(wav.size(1), device=wav.device)[None, :] < lengths[:, None]
    n = lengths[:, None].to(wav.dtype)
    mean = (wav * valid).sum(1, keepdim=True) / n
    var = (((wav - mean) * valid) ** 2).sum(1, keepdim=True) / n
    return ((wav - mean) / (var + 1e-5).sqrt()) * valid


def _pad_outputs(outs: List[TeacherOutput]) -> TeacherOutput:
    def pad(ts):
        return nn.utils.rnn.pad_sequence([t[0] for t in ts], batch_first=True)

    lengths = torch.cat([o.lengths for o in outs])
    hidden = [pad([o.hidden[k][:, : int(o.lengths[0])] for o in outs]) for k in range(len(outs[0].hidden))]
    logits = None
    if outs[0].logits is not None:
        logits = pad([o.logits[:, : int(o.lengths[0])] for o in outs])
    return TeacherOutput(hidden=hidden, lengths=lengths, logits=logits, frame_shift_ms=outs[0].frame_shift_ms)
