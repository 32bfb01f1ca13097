"""ESPnet front-end wrapping the core's streaming-exact front-ends (``kd_core.students.frontends``)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import humanfriendly
import torch
from espnet2.asr.frontend.abs_frontend import AbsFrontend

from kd_core.errors import require
from kd_core.students.frontends import FRONTENDS


class KDStreamingFrontend(AbsFrontend):
    """Valid-convolution front-end: log-Mel + Conv2d x4 (``fbank``; ``kaldi_fbank`` with Kaldi's features, which
    deployment runtimes compute, see ``kd_core.export_onnx``) or a waveform CNN (``wav_cnn``).

    Unlike ESPnet's ``default`` front-end (centred STFT) every output frame depends only on
    samples already received, so chunked decoding is exact. The output is already
    subsampled (40 ms frames by default); use it with ``normalize: null``.

    Args:
        fs: sample rate (``16000`` or ``"16k"``, as ESPnet's ``asr.sh`` passes it).
        kind: ``"fbank"``, ``"kaldi_fbank"`` or ``"wav_cnn"``.
        n_mels, win_ms, hop_ms, channels: ``fbank``/``kaldi_fbank`` options.
        conv_layers: ``wav_cnn`` layers ``[[channels, kernel, stride], ...]``.
    Shapes:
        ``(B, S)`` samples + ``(B,)`` -> ``(B, T, output_size())`` + ``(B,)``.
    """

    def __init__(self, fs: Union[int, str] = 16000, kind: str = "fbank", n_mels: int = 80, win_ms: float = 25.0,
                 hop_ms: float = 10.0, channels: int = 64, conv_layers: Optional[Sequence[Sequence[int]]] = None):
        super().__init__()
        self.fs = int(humanfriendly.parse_size(fs)) if isinstance(fs, str) else int(fs)
        require(kind in FRONTENDS, f"frontend_conf.kind={kind!r}: unknown; choose one of {sorted(FRONTENDS)}")
        if kind in ("fbank", "kaldi_fbank"):
            self.net = FRONTENDS[kind](n_mels=n_mels, sample_rate=self.fs, win_ms=win_ms, hop_ms=hop_ms, channels=channels)
        else:
            self.net = FRONTENDS[kind](**({"conv_layers": [tuple(c) for c in conv_layers]} if conv_layers else {}))
        self.receptive_field, self.stride = self.net.receptive_field, self.net.stride

    @property
    def output_dim(self) -> int:
        return self.net.output_dim

    def output_size(self) -> int:
        return self.net.output_dim

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.net(input, input_lengths)
