"""Export a streaming CTC student as a WeNet-style streaming ONNX model that sherpa-onnx's online CTC recognizer runs.

The interface (read from sherpa-onnx's ``online-wenet-ctc-model.cc``; sherpa-onnx passes the inputs by
position, reads the metadata below, and keeps the two caches between calls):

=======================  =====================================  ==========================================
input                    shape / type                           meaning
=======================  =====================================  ==========================================
``chunk``                ``(1, (c - 1) * 4 + 7, n_mels)`` f32   Kaldi fbank frames of one chunk (+ 6 of
                                                                look-ahead of the Conv2d subsampling)
``offset``               ``(1,)`` int64                         ``R`` + encoder frames already emitted
``required_cache_size``  ``(1,)`` int64                         ``R = c * left_chunks``
``att_cache``            ``(L, H, R, 2 * D / H)`` f32           per block, the keys then values of the last
                                                                ``R`` frames
``cnn_cache``            ``(L, 1, D, K - 1)`` f32               per block, the causal convolution's inputs
``att_mask``             ``(1, 1, R + c)`` bool                 True on cache frames that hold history
=======================  =====================================  ==========================================

Outputs: ``log_probs (1, c, V)``, ``r_att_cache``, ``r_cnn_cache`` (same shapes as the caches). One call
is exactly one chunk of :meth:`~kd_core.students.encoder.ChunkedEncoder.stream_step` with history limited
to ``left_chunks`` chunks: the graph runs the student's own modules (its
:class:`~kd_core.students.kaldi_fbank.KaldiFbankConv2d` after the fbank, the encoder blocks with their
projected key/value cache, the CTC head), so the ONNX model and the PyTorch streaming decode are one
computation. Chunk size and left context are fixed at export (metadata ``chunk_size``, ``left_chunks``;
the runtime must be given the same values).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..atomic import atomic_write_text
from ..errors import require
from ..students.encoder import ChunkedEncoder

logger = logging.getLogger(__name__)

INPUT_NAMES = ["chunk", "offset", "required_cache_size", "att_cache", "cnn_cache", "att_mask"]
OUTPUT_NAMES = ["log_probs", "r_att_cache", "r_cnn_cache"]
MODEL_FILE, INT8_FILE, TOKENS_FILE = "model-streaming.onnx", "model-streaming.int8.onnx", "tokens.txt"


@dataclass
class DeployableStudent:
    """What the export needs, whichever toolkit trained the student.

    ``frontend``: a ``kaldi_fbank`` front-end; ``encoder``: the chunked encoder; ``ctc``: ``Linear(D, V)``;
    ``tokens``: the ``V`` output symbols, index 0 the CTC blank; ``word_boundary``: the symbol written as a
    space (``|`` for fairseq letters, ``<space>`` for ESPnet characters; ``None`` for BPE ``▁`` units);
    ``frame_scale``/``frame_shift``: an optional per-frame affine map of the front-end output (ESPnet's
    ``global_mvn``), ``(frontend.output_dim,)`` each.
    """

    frontend: nn.Module
    encoder: ChunkedEncoder
    ctc: nn.Linear
    tokens: List[str]
    word_boundary: Optional[str] = None
    frame_scale: Optional[torch.Tensor] = None
    frame_shift: Optional[torch.Tensor] = None

    def frame_transform(self, frames: torch.Tensor) -> torch.Tensor:
        """Front-end frames ``(1, T, C)`` -> what the encoder reads (identity without an affine map)."""
        if self.frame_scale is None:
            return frames
        return frames * self.frame_scale + self.frame_shift


def check_exportable(student: DeployableStudent, left_chunks: Optional[int]) -> int:
    """One line unless ``student`` can run as a WeNet streaming CTC model; returns the left chunks to export."""
    from ..students.kaldi_fbank import KaldiFbankConv2d

    enc = student.encoder
    require(isinstance(student.frontend, KaldiFbankConv2d), f"front-end {type(student.frontend).__name__}: the runtime "
            "computes Kaldi fbank itself and cannot reproduce it; train the student with frontend kaldi_fbank")
    require(student.frontend.hop * 4 == student.frontend.stride and student.frontend.sample_rate == 16000 and
            student.frontend.win == 400 and student.frontend.hop == 160,
            "front-end: the runtime's fbank is 25 ms / 10 ms at 16 kHz; train with win_ms 25, hop_ms 10, 16 kHz audio")
    require(enc.chunk_size > 0, "chunk_size=0: a full-context student cannot stream; train (or fine-tune) with chunk_size > 0")
    require(enc.squeeze == 1, f"squeeze={enc.squeeze}: the export does not build SEW squeezing into the graph yet; "
            "deploy an unsqueezed student (squeeze 1)")
    require(enc.right_context == 0, f"right_context={enc.right_context}: the runtime's model type has no encoder "
            "look-ahead; train with right_context 0")
    left = enc.num_left_chunks if left_chunks is None else left_chunks
    require(left >= 1, f"left chunks {left}: the runtime keeps a fixed history; pass --left-chunks N (N >= 1) "
            "(the student was trained with unlimited history, num_left_chunks -1)")
    require(student.ctc is not None and len(student.tokens) == student.ctc.out_features,
            f"{len(student.tokens)} tokens for a CTC head of {getattr(student.ctc, 'out_features', 0)} outputs: "
            "give the token list the student was trained with")
    return left


class WenetCtcStep(nn.Module):
    """One chunk of the student in the WeNet streaming interface (see the module docstring)."""

    def __init__(self, student: DeployableStudent, left_chunks: int):
        super().__init__()
        self.frontend, self.encoder, self.ctc = student.frontend, student.encoder, student.ctc
        self.student = student
        self.chunk, self.cache = student.encoder.chunk_size, student.encoder.chunk_size * left_chunks

    def forward(self, chunk, offset, required_cache_size, att_cache, cnn_cache, att_mask) -> Tuple[torch.Tensor, ...]:
        fe = self.frontend
        frames = self.student.frame_transform(fe.subsample(fe.normalize(chunk)))  # (1, c, C)
        x = self.encoder.embed_frames(frames, offset - required_cache_size)
        valid = torch.ones(1, x.size(1), dtype=torch.bool)
        mask = att_mask.expand(1, x.size(1), att_mask.size(-1))
        new_att, new_cnn = [], []
        for i, layer in enumerate(self.encoder.layers):
            conv_prefix = cnn_cache[i].transpose(1, 2) if layer.conformer else None
            x, kv, conv_prefix = layer(x, valid, mask, None, att_cache[i : i + 1], conv_prefix)
            new_att.append(torch.cat([att_cache[i], kv[0]], dim=1)[:, kv.size(2) :])
            new_cnn.append(conv_prefix.transpose(1, 2) if layer.conformer else cnn_cache[i] * 1.0)
        return torch.log_softmax(self.ctc(x), dim=-1), torch.stack(new_att), torch.stack(new_cnn)

    def example_inputs(self) -> Tuple[torch.Tensor, ...]:
        """Zero inputs of the exported shapes (the first call of a stream)."""
        enc, fe = self.encoder, self.frontend
        heads = enc.layers[0].att.h
        kernel = enc.layers[0].conv.k if enc.layers[0].conformer else 1
        length = (self.chunk - 1) * 4 + (fe.receptive_field - fe.win) // fe.hop + 1
        return (torch.zeros(1, length, fe.n_mels), torch.tensor([self.cache]), torch.tensor([self.cache]),
                torch.zeros(enc.num_layers, heads, self.cache, 2 * enc.d_model // heads),
                torch.zeros(enc.num_layers, 1, enc.d_model, kernel - 1),
                torch.cat([torch.zeros(1, 1, self.cache, dtype=torch.bool), torch.ones(1, 1, self.chunk, dtype=torch.bool)], -1))

    def metadata(self, left_chunks: int) -> Dict[str, str]:
        enc, fe = self.encoder, self.frontend
        first = enc.layers[0]
        meta = {
            "model_type": "wenet_ctc", "version": "1", "producer": "kd_core",
            "chunk_size": self.chunk, "left_chunks": left_chunks, "head": first.att.h, "num_blocks": enc.num_layers,
            "output_size": enc.d_model, "cnn_module_kernel": first.conv.k if first.conformer else 1,
            "right_context": (fe.receptive_field - fe.win) // fe.hop, "subsampling_factor": fe.stride // fe.hop,
            "vocab_size": self.ctc.out_features, "feature_dim": fe.n_mels, "sample_rate": fe.sample_rate,
            "frontend": "kaldi fbank 25 ms / 10 ms, snip_edges false, samples x 32768; global mean/std and Conv2d x4 in the graph",
        }
        return {k: str(v) for k, v in meta.items()}


def write_tokens(student: DeployableStudent, path: Path) -> None:
    """``tokens.txt`` as the runtime reads it: ``symbol id`` per line, blank as ``<blk>``, the word boundary as ``▁``
    (which the runtime turns into a space)."""
    lines = []
    for i, tok in enumerate(student.tokens):
        sym = "<blk>" if i == 0 else ("\u2581" if tok == student.word_boundary else tok)
        require(sym and not any(c.isspace() for c in sym), f"token {i} {tok!r}: the runtime's tokens.txt cannot hold "
                "whitespace; use a word-boundary symbol (| or <space>)")
        lines.append(f"{sym} {i}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def export_wenet_ctc(student: DeployableStudent, out_dir: str, left_chunks: Optional[int] = None,
                     int8: bool = False) -> Dict[str, Path]:
    """Write ``model-streaming.onnx`` (+ ``model-streaming.int8.onnx`` with ``int8``) and ``tokens.txt`` to ``out_dir``.

    Returns the written paths by kind (``model``, ``int8``, ``tokens``). Every file is written to a temporary
    name first and renamed, so an interrupted export never leaves a half-written model under the final name.
    """
    import onnx

    left = check_exportable(student, left_chunks)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    step = WenetCtcStep(student, left).eval()
    paths = {"model": out / MODEL_FILE, "tokens": out / TOKENS_FILE}
    tmp = out / (MODEL_FILE + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Constant folding")  # the exporter's note on strided slices
        torch.onnx.export(step, step.example_inputs(), str(tmp), input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                          opset_version=17, dynamo=False)
    model = onnx.load(str(tmp))
    for key, value in step.metadata(left).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(tmp))
    tmp.replace(paths["model"])
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        paths["int8"] = out / INT8_FILE
        tmp8 = out / (INT8_FILE + ".tmp")
        quantize_dynamic(str(paths["model"]), str(tmp8), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
        tmp8.replace(paths["int8"])
    write_tokens(student, paths["tokens"])
    logger.info("exported %s (chunk %d frames, %d left chunks)", ", ".join(str(p) for p in paths.values()), step.chunk, left)
    return paths
