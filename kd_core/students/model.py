"""Streaming student: front-end + :class:`ChunkedEncoder` + optional CTC head, and its factories."""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional

import torch
from torch import nn

from ..errors import require
from .encoder import ChunkedEncoder
from .frontends import FRONTENDS, SampleBuffer, frontend_timing_ms

logger = logging.getLogger(__name__)


@dataclass
class StudentOutput:
    """``hidden``: ``num_layers + 1`` tensors ``(B, T, D)``; ``lengths (B,)``; ``logits (B, T, V)`` or None."""

    hidden: List[torch.Tensor]
    lengths: torch.Tensor
    logits: Optional[torch.Tensor] = None


class StreamingStudent(nn.Module):
    """Waveform -> frames -> chunked encoder -> CTC logits.

    Args:
        frontend: ``"wav_cnn"`` (wav2vec2-style waveform CNN), ``"fbank"`` (log-Mel + Conv2d x4) or
            ``"kaldi_fbank"`` (Kaldi-compatible fbank + Conv2d x4, the features deployment runtimes compute).
        frontend_conf: keyword arguments of the front-end class.
        vocab_size: CTC output size (``0``: no CTC head, e.g. pure feature distillation).
        sample_rate: input sample rate in Hz.
        **encoder_conf: :class:`ChunkedEncoder` arguments (``d_model``, ``num_layers``, ...).
    Shapes:
        ``forward``: ``(B, S)`` waveforms + ``(B,)`` sample lengths -> :class:`StudentOutput`.
    """

    def __init__(self, frontend: str = "fbank", frontend_conf: Optional[dict] = None, vocab_size: int = 0,
                 sample_rate: int = 16000, **encoder_conf):
        super().__init__()
        require(frontend in FRONTENDS, f"frontend={frontend!r}: unknown; choose one of {sorted(FRONTENDS)}")
        self.frontend = FRONTENDS[frontend](**(frontend_conf or {}))
        self.encoder = ChunkedEncoder(self.frontend.output_dim, **encoder_conf)
        self.ctc = nn.Linear(self.encoder.d_model, vocab_size) if vocab_size > 0 else None
        self.sample_rate = sample_rate

    @property
    def frame_shift_ms(self) -> float:
        return frontend_timing_ms(self.frontend, self.sample_rate)[0]

    @property
    def frontend_lookahead_ms(self) -> float:
        """Samples beyond one stride that a frame needs, in ms (part of algorithmic latency)."""
        return frontend_timing_ms(self.frontend, self.sample_rate)[1]

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor, chunk_size: Optional[int] = None) -> StudentOutput:
        feats, flen = self.frontend(wav, lengths)
        hidden, flen = self.encoder(feats, flen, chunk_size)
        logits = self.ctc(hidden[-1]) if self.ctc is not None else None
        return StudentOutput(hidden, flen, logits)

    @torch.no_grad()
    def stream(self, pieces: Iterable[torch.Tensor]) -> StudentOutput:
        """Decode a waveform given as successive ``(1, n)`` pieces of any size, chunk by chunk.

        Returns the concatenated outputs, equal to :meth:`forward` under the chunk mask.
        """
        hidden = stream_hidden(self.frontend, self.encoder, pieces)
        logits = self.ctc(hidden[-1]) if self.ctc is not None else None
        return StudentOutput(hidden, torch.tensor([hidden[-1].size(1)]), logits)


@torch.no_grad()
def stream_steps(frontend: nn.Module, encoder: ChunkedEncoder, pieces: Iterable[torch.Tensor],
                 frame_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Iterator[List[torch.Tensor]]:
    """The chunk-by-chunk loop: a valid-convolution ``frontend`` and a :class:`ChunkedEncoder` fed
    successive ``(1, n)`` waveform pieces of any size. ``frame_transform`` maps front-end frames
    ``(1, t, C)`` before the encoder; it must act on each frame alone (e.g. a global mean/variance
    normalisation), which keeps streaming exact.

    Yields, per piece and once more at the end (the flush), the ``L + 1`` hidden states ``(1, t, D)``
    that became ready (``t`` may be 0). Their concatenation equals the full forward under the chunk
    mask (:func:`stream_hidden`); timing each step measures the per-call compute latency.
    """
    buf = SampleBuffer(frontend.receptive_field, frontend.stride, getattr(frontend, "left_pad", 0))
    valid_frames = getattr(frontend, "forward_valid", frontend)  # the front-end without its own edge padding
    state = encoder.init_state()
    for piece in itertools.chain(pieces, [None]):
        final = piece is None
        ready = buf.push(piece) if not final else buf.buf[:, :0]
        if ready.size(1):
            feats, _ = valid_frames(ready, torch.tensor([ready.size(1)]))
            feats = frame_transform(feats) if frame_transform is not None and feats.size(1) else feats
        else:
            feats = torch.zeros(1, 0, frontend.output_dim)
        hid, state = encoder.stream_step(feats, state, final=final)
        yield hid


@torch.no_grad()
def stream_hidden(frontend: nn.Module, encoder: ChunkedEncoder, pieces: Iterable[torch.Tensor],
                  frame_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> List[torch.Tensor]:
    """All of :func:`stream_steps`: the ``L + 1`` hidden states ``(1, T, D)``, equal to the full forward
    under the chunk mask. Used by :meth:`StreamingStudent.stream` and the toolkit adapters' streaming decoders.
    """
    outs = list(stream_steps(frontend, encoder, pieces, frame_transform))
    return [torch.cat([o[k] for o in outs], dim=1) for k in range(len(outs[0]))]


def streaming_student(**kwargs) -> StreamingStudent:
    """Factory: ``streaming_student(frontend="fbank", d_model=144, num_layers=6, chunk_size=12, vocab_size=30)``."""
    model = StreamingStudent(**kwargs)
    n = sum(p.numel() for p in model.parameters())
    logger.info("student: %.2fM parameters, frame shift %.0f ms", n / 1e6, model.frame_shift_ms)
    return model


def student_tiny(**overrides) -> StreamingStudent:
    """Preset for tests and the CI demo (~0.3M parameters)."""
    conf = dict(frontend="fbank", frontend_conf=dict(n_mels=40, channels=16), d_model=64, num_layers=3,
                num_heads=4, ffn_dim=128, conv_kernel=7, dropout=0.0)
    conf.update(overrides)
    return streaming_student(**conf)


def student_small(**overrides) -> StreamingStudent:
    """Preset at about 1/12 of a wav2vec2-base-sized teacher's parameters (~7M)."""
    conf = dict(frontend="fbank", d_model=256, num_layers=8, num_heads=4, ffn_dim=1024, conv_kernel=15, dropout=0.1)
    conf.update(overrides)
    return streaming_student(**conf)
