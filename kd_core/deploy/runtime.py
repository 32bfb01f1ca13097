"""Run an exported student: onnxruntime chunk by chunk (as sherpa-onnx drives it), sherpa-onnx end to end, and the
PyTorch streaming decode of exactly the chunks the runtime decodes (the reference both are tested against).

sherpa-onnx decodes chunk ``k`` (fbank frames ``[k * 4c, k * 4c + (c - 1) * 4 + 7)``) once strictly more frames
than it needs are ready, so after ``input_finished()`` it has decoded
``N = max(0, (F - L - 1) // (4c) + 1)`` chunks, ``F = (samples + 80) // 160`` (Kaldi's frame count with
``snip_edges=False``) and ``L`` the chunk length in frames; audio past chunk ``N`` needs tail padding
(``tail_s``), as sherpa-onnx's own examples add.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from ..data import greedy_ctc
from ..errors import require
from ..students.model import stream_hidden
from .wenet_onnx import INT8_FILE, MODEL_FILE, TOKENS_FILE, DeployableStudent


def read_metadata(model_path: str) -> Dict[str, str]:
    """The exported model's metadata (``chunk_size``, ``left_chunks``, ``feature_dim``, ...)."""
    import onnxruntime as ort

    require(Path(model_path).is_file(), f"{model_path}: no such model; export one with python -m kd_core.export_onnx")
    return dict(ort.InferenceSession(model_path, providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map)


def chunks_decoded(num_samples: int, chunk_size: int, hop: int = 160, chunk_frames: Optional[int] = None) -> int:
    """How many chunks sherpa-onnx decodes for ``num_samples`` finished samples (see the module docstring)."""
    frames = (num_samples + hop // 2) // hop
    length = (chunk_size - 1) * 4 + 7 if chunk_frames is None else chunk_frames
    return max(0, (frames - length - 1) // (4 * chunk_size) + 1)


class OrtStreamer:
    """The exported graph under onnxruntime, fed the way sherpa-onnx feeds it (offset, cache window, mask).

    ``run(feats)`` takes the whole ``(F, n_mels)`` Kaldi fbank and returns the ``(N * c, V)`` log-probs of every
    complete chunk; :meth:`step` is one call (for per-chunk timing).
    """

    def __init__(self, model_path: str, num_threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = num_threads, 1
        self.sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
        meta = self.sess.get_modelmeta().custom_metadata_map
        self.chunk, self.left = int(meta["chunk_size"]), int(meta["left_chunks"])
        self.sub, self.vocab = int(meta["subsampling_factor"]), int(meta["vocab_size"])
        self.length = (self.chunk - 1) * self.sub + int(meta["right_context"]) + 1
        self.shapes = {i.name: i.shape for i in self.sess.get_inputs()}
        self.reset()

    def reset(self) -> None:
        self.cache = self.chunk * self.left
        self.offset = self.cache
        self.att = np.zeros(self.shapes["att_cache"], dtype=np.float32)
        self.cnn = np.zeros(self.shapes["cnn_cache"], dtype=np.float32)

    def step(self, chunk: np.ndarray) -> np.ndarray:
        """``(L, n_mels)`` fbank frames -> ``(c, V)`` log-probs; updates the caches and the offset."""
        index = self.offset // self.chunk - self.left
        mask = np.ones((1, 1, self.cache + self.chunk), dtype=bool)
        if index < self.left:
            mask[..., : self.cache - index * self.chunk] = False
        logp, self.att, self.cnn = self.sess.run(None, {
            "chunk": chunk[None].astype(np.float32), "offset": np.array([self.offset], dtype=np.int64),
            "required_cache_size": np.array([self.cache], dtype=np.int64), "att_cache": self.att,
            "cnn_cache": self.cnn, "att_mask": mask})
        self.offset += logp.shape[1]
        return logp[0]

    def run(self, feats: np.ndarray) -> np.ndarray:
        self.reset()
        shift = self.chunk * self.sub
        out = [self.step(feats[k : k + self.length]) for k in range(0, feats.shape[0] - self.length + 1, shift)]
        return np.concatenate(out) if out else np.zeros((0, self.vocab), dtype=np.float32)


def student_fbank(student: DeployableStudent, wav: torch.Tensor) -> torch.Tensor:
    """``(1, S)`` -> ``(F, n_mels)``: the Kaldi fbank the runtime computes (complete windows; the start mirrored)."""
    return student.frontend.runtime_features(wav)[0]


@torch.no_grad()
def torch_stream_logprobs(student: DeployableStudent, wav: torch.Tensor, left_chunks: int, piece: int = 1600) -> torch.Tensor:
    """``(1, S)`` -> ``(T, V)``: the core's chunk-by-chunk PyTorch decode (``piece``-sample pieces) with history limited
    to ``left_chunks`` chunks, as exported; log-softmax of the CTC head."""
    encoder = copy.copy(student.encoder)
    encoder.num_left_chunks = left_chunks
    hidden = stream_hidden(student.frontend, encoder, wav.split(piece, dim=1), student.frame_transform)[-1]
    return torch.log_softmax(student.ctc(hidden), dim=-1)[0]


def ids_to_text(student: DeployableStudent, ids: List[int]) -> str:
    """Token ids -> text the way the runtime joins them (word boundary -> space), whitespace normalised."""
    text = "".join(" " if student.tokens[i] in (student.word_boundary, "\u2581") else student.tokens[i] for i in ids)
    return " ".join(text.split())


def reference_transcript(student: DeployableStudent, wav: torch.Tensor, left_chunks: int, tail_s: float = 0.66,
                         sample_rate: int = 16000) -> str:
    """The PyTorch streaming greedy transcript of exactly the chunks sherpa-onnx decodes for ``wav`` + ``tail_s`` of
    zeros (extra zeros let the core's valid-window front-end complete the last of them)."""
    padded = torch.cat([wav, wav.new_zeros(1, int(tail_s * sample_rate))], dim=1)
    n = chunks_decoded(padded.size(1), student.encoder.chunk_size)
    logp = torch_stream_logprobs(student, torch.cat([padded, wav.new_zeros(1, sample_rate)], dim=1), left_chunks)
    frames = n * student.encoder.chunk_size
    return ids_to_text(student, greedy_ctc(logp[None, :frames], torch.tensor([frames]))[0])


def sherpa_recognizer(model_dir: str, int8: bool = False, num_threads: int = 1):
    """sherpa-onnx's ``OnlineRecognizer`` for an exported folder, configured from the model's own metadata."""
    import sherpa_onnx

    model = str(Path(model_dir) / (INT8_FILE if int8 else MODEL_FILE))
    meta = read_metadata(model)
    return sherpa_onnx.OnlineRecognizer.from_wenet_ctc(
        tokens=str(Path(model_dir) / TOKENS_FILE), model=model, chunk_size=int(meta["chunk_size"]),
        num_left_chunks=int(meta["left_chunks"]), num_threads=num_threads, sample_rate=int(meta["sample_rate"]),
        feature_dim=int(meta["feature_dim"]), decoding_method="greedy_search")


def sherpa_transcribe(recognizer, wav: np.ndarray, sample_rate: int = 16000, tail_s: float = 0.66) -> str:
    """Decode one ``[-1, 1]`` float waveform with sherpa-onnx (all at once, then tail padding), whitespace normalised."""
    stream = recognizer.create_stream()
    stream.accept_waveform(sample_rate, wav.astype(np.float32))
    stream.accept_waveform(sample_rate, np.zeros(int(tail_s * sample_rate), dtype=np.float32))
    stream.input_finished()
    while recognizer.is_ready(stream):
        recognizer.decode_stream(stream)
    return " ".join(recognizer.get_result(stream).split())
