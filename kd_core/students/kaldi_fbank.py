"""Kaldi-compatible log-Mel filterbank + Conv2d x4: the front-end whose features deployment runtimes compute themselves.

sherpa-onnx (through kaldi-native-fbank) feeds a WeNet-style streaming CTC model with Kaldi fbank
features: 16-bit-range samples (it multiplies ``[-1, 1]`` input by 32768 for these models), 25 ms /
10 ms frames with ``snip_edges=False`` (frame ``i`` starts at sample ``160 i - 120``; the first frames
mirror the signal's start), no dither, DC removal, pre-emphasis 0.97, the Povey window, a 512-point
FFT, the power spectrum, ``n_mels`` triangular Mel bins from 20 Hz to Nyquist - 400 Hz (Kaldi's bins,
taken from ``torchaudio.compliance.kaldi.get_mel_banks``) and ``log(max(energy, FLT_EPSILON))``.
:func:`kaldi_fbank` computes exactly that, batched; the global mean/variance and the Conv2d
subsampling of :class:`~kd_core.students.frontends.FbankConv2d` follow, and those two go into the
exported ONNX graph (:mod:`kd_core.deploy`), while the runtime computes the fbank.

Streaming stays exact: the start mirror depends only on the first 120 samples
(:class:`~kd_core.students.frontends.SampleBuffer` ``left_pad``), and every frame after it is a valid
window. The signal's end is never mirrored (Kaldi mirrors it only when input is finished), so the last
frames are those whose window is complete.
"""
from __future__ import annotations

from typing import Tuple

import torch

from .frontends import FbankConv2d, valid_conv_length

#: what the runtime multiplies ``[-1, 1]`` samples by for WeNet CTC models (``normalize_samples=false``)
SAMPLE_SCALE = 32768.0
#: runtime defaults (sherpa-onnx ``FeatureExtractorConfig``)
LOW_FREQ, HIGH_FREQ, PREEMPH = 20.0, -400.0, 0.97


def kaldi_fbank(windows: torch.Tensor, mel_banks: torch.Tensor, fft_size: int) -> torch.Tensor:
    """Kaldi's per-frame fbank of already cut windows.

    Args:
        windows: ``(B, F, win)`` raw sample windows (16-bit range).
        mel_banks: ``(n_mels, fft_size // 2)`` Kaldi Mel weights (the Nyquist bin has weight 0).
        fft_size: FFT length (the window length rounded up to a power of two).
    Returns:
        ``(B, F, n_mels)`` ``log(max(mel energy, FLT_EPSILON))``.
    """
    x = windows - windows.mean(dim=-1, keepdim=True)
    x = torch.cat([x[..., :1] * (1 - PREEMPH), x[..., 1:] - PREEMPH * x[..., :-1]], dim=-1)
    n = x.size(-1)
    povey = (0.5 - 0.5 * torch.cos(2 * torch.pi * torch.arange(n, dtype=x.dtype, device=x.device) / (n - 1))).pow(0.85)
    power = torch.fft.rfft(x * povey, n=fft_size).abs().pow(2)[..., : fft_size // 2]
    return (power @ mel_banks.t()).clamp(min=torch.finfo(torch.float32).eps).log()


class KaldiFbankConv2d(FbankConv2d):
    """:class:`~kd_core.students.frontends.FbankConv2d` whose features are Kaldi's (what sherpa-onnx computes).

    ``receptive_field`` and ``stride`` count samples of the start-mirrored signal (``left_pad`` samples
    longer); :meth:`forward` mirrors, :meth:`forward_valid` takes an already mirrored signal (streaming).

    Shapes:
        ``(B, S)`` -> ``(B, T, channels * ((n_mels - 1) // 2 - 1) // 2)``, ``T = (S + 120 - 1360) // 640 + 1``
        at 16 kHz.
    """

    def _init_features(self) -> None:
        from torchaudio.compliance.kaldi import get_mel_banks

        self.fft_size = 1 << (self.win - 1).bit_length()
        banks, _ = get_mel_banks(self.n_mels, self.fft_size, float(self.sample_rate), LOW_FREQ, HIGH_FREQ, 100.0, -500.0, 1.0)
        self.register_buffer("mel_banks", banks.float(), persistent=False)
        self.left_pad = self.win // 2 - self.hop // 2

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` (already start-mirrored, ``[-1, 1]``) -> ``(B, frames, n_mels)`` Kaldi fbank of each complete window."""
        if wav.size(1) < self.win:
            return wav.new_zeros(wav.size(0), 0, self.n_mels)
        return kaldi_fbank((wav * SAMPLE_SCALE).unfold(1, self.win, self.hop), self.mel_banks, self.fft_size)

    def mirror_start(self, wav: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` -> ``(B, left_pad + S)``: Kaldi's ``snip_edges=False`` mirror of each utterance's first samples."""
        return torch.cat([wav[:, : self.left_pad].flip(1), wav], dim=1)

    def runtime_features(self, wav: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` -> ``(B, frames, n_mels)``: the fbank a runtime computes from the whole waveform (start mirrored,
        complete windows), i.e. what the exported graph reads."""
        return self.features(self.mirror_start(wav))

    def forward_valid(self, wav: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The front-end on a signal already mirrored at its start (``lengths`` count its samples)."""
        return super().forward(wav, lengths)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        feats, _ = self.forward_valid(self.mirror_start(wav), lengths + self.left_pad)
        return feats, valid_conv_length(lengths + self.left_pad, self.receptive_field, self.stride)
