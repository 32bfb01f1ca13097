"""Model ``kd_streaming_student``: the core's streaming student under fairseq's model contract.

The config mirrors the core signatures field for field (front-end options of
:class:`~kd_core.students.frontends.FbankConv2d` / ``WaveformCNN``, every
:class:`~kd_core.students.encoder.ChunkedEncoder` argument; a test keeps them equal), plus the
teacher (``teacher_type``/``teacher_path``) and ``init_student`` for two-stage KD.

``forward(source (B, S), padding_mask (B, S))`` returns fairseq's CTC model dict: ``encoder_out``
``(T, B, V)`` logits and ``padding_mask`` ``(B, T)`` (so fairseq's own ``ctc`` criterion trains it
from scratch), plus ``student``: the core's batch-first :class:`~kd_core.students.model.StudentOutput`
that the KD criteria use. Only this adapter transposes to ``T x B``.
"""

import ast
import logging
import math
import os
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model

from kd_core.errors import KDConfigError, require
from kd_core.streaming import algorithmic_latency_ms, lengths_to_mask
from kd_core.students.model import StreamingStudent, streaming_student
from kd_core.teachers import TEACHER_TYPES, Teacher, load_teacher

logger = logging.getLogger(__name__)
MODEL_NAME = "kd_streaming_student"
WAV_CNN_DEFAULT = "[(128, 10, 5), (128, 3, 2), (128, 3, 2), (128, 3, 2), (128, 2, 2), (128, 2, 2), (128, 2, 2), (128, 2, 2)]"
#: config fields passed to ChunkedEncoder unchanged
ENCODER_FIELDS = ("d_model", "num_layers", "num_heads", "ffn_dim", "block_type", "conv_kernel", "dropout", "chunk_size",
                  "num_left_chunks", "right_context", "dynamic_chunk", "causal_conv", "squeeze")
FBANK_FIELDS = ("n_mels", "win_ms", "hop_ms", "channels")


@dataclass
class KDStudentConfig(FairseqDataclass):
    # front-end (kd_core.students.frontends)
    frontend: ChoiceEnum(["fbank", "kaldi_fbank", "wav_cnn"]) = field(default="fbank", metadata={
        "help": "fbank: log-Mel + Conv2d x4; kaldi_fbank: Kaldi fbank + Conv2d x4 (what sherpa-onnx computes: needed to "
                "export with kd_core.export_onnx); wav_cnn: wav2vec2-style waveform CNN (per-frame LayerNorm); all 40 ms frames"})
    n_mels: int = field(default=80, metadata={"help": "fbank: Mel bins"})
    win_ms: float = field(default=25.0, metadata={"help": "fbank: window length (ms)"})
    hop_ms: float = field(default=10.0, metadata={"help": "fbank: hop (ms); frames are 4 hops"})
    channels: int = field(default=64, metadata={"help": "fbank: Conv2d channels"})
    conv_feature_layers: str = field(default=WAV_CNN_DEFAULT, metadata={
        "help": "wav_cnn: [(channels, kernel, stride), ...] in fairseq's conv_feature_layers syntax (+ and * allowed)"})
    # encoder (kd_core.students.encoder.ChunkedEncoder)
    d_model: int = field(default=144, metadata={"help": "encoder width"})
    num_layers: int = field(default=6, metadata={"help": "encoder layers"})
    num_heads: int = field(default=4, metadata={"help": "attention heads"})
    ffn_dim: int = field(default=576, metadata={"help": "feed-forward size"})
    block_type: ChoiceEnum(["conformer", "transformer"]) = field(default="conformer", metadata={"help": "block type"})
    conv_kernel: int = field(default=15, metadata={"help": "conformer depthwise kernel"})
    dropout: float = field(default=0.1, metadata={"help": "dropout"})
    chunk_size: int = field(default=0, metadata={
        "help": "frames (40 ms) per attention chunk; 0 = full context (non-streaming); 12 = 480 ms"})
    num_left_chunks: int = field(default=-1, metadata={"help": "chunks of history (-1: all)"})
    right_context: int = field(default=0, metadata={"help": "look-ahead frames of the first layer"})
    dynamic_chunk: bool = field(default=False, metadata={"help": "train with random chunk sizes on half the batches"})
    causal_conv: Optional[bool] = field(default=None, metadata={"help": "default: causal iff chunk_size > 0"})
    squeeze: int = field(default=1, metadata={
        "help": "SEW squeezing: the encoder runs on frames pooled in groups of this many (chunk_size and right_context "
                "multiples of it) and upsamples its output back; 1 = off"})
    ctc_head: bool = field(default=True, metadata={"help": "CTC output layer over the task's dictionary (if it has one)"})
    # teacher and initialisation
    teacher_type: ChoiceEnum(list(TEACHER_TYPES)) = field(default="fairseq", metadata={
        "help": "fairseq: wav2vec2/HuBERT(-CTC) .pt or a kd_streaming_student checkpoint; espnet: packed zip / zoo "
                "name; torchaudio: factory name or fairseq .pt"})
    teacher_path: Optional[str] = field(default=None, metadata={"help": "teacher checkpoint; needed when criterion.kd_weight > 0"})
    teacher_data_dir: Optional[str] = field(default=None, metadata={
        "help": "fairseq teacher: folder with its task's dict.<label>.txt (default: the checkpoint's, else placeholders)"})
    teacher_cachedir: Optional[str] = field(default=None, metadata={"help": "espnet teacher: unpack folder"})
    teacher_dtype: ChoiceEnum(["float32", "bfloat16", "float16"]) = field(default="float32", metadata={
        "help": "what the teacher computes in (autocast; targets stay float32); bfloat16 on CPUs with AVX512-BF16/AMX"})
    init_student: Optional[str] = field(default=None, metadata={
        "help": "kd_streaming_student checkpoint whose weights initialise this student (two-stage: stage 1 -> 2)"})
    init_from_teacher: bool = field(default=False, metadata={
        "help": "copy the teacher's CNN (wav_cnn with the teacher's conv layers) and CTC head where shapes match"})
    teacher_cache_dir: Optional[str] = field(default=None, metadata={
        "help": "teacher-target cache (kd_core.cache): read the teacher's layers instead of running it"})
    teacher_cache_mode: ChoiceEnum(["fill", "read"]) = field(default="fill", metadata={
        "help": "fill: compute and store what is not cached; read: every utterance must be cached"})
    teacher_cache_dtype: ChoiceEnum(["float16", "float32"]) = field(default="float16", metadata={
        "help": "storage precision of cached targets"})


def _literal(node: ast.AST):
    """Literals, lists/tuples of them, and ``+`` / ``*`` between them: fairseq's conv_feature_layers grammar."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _literal(node.left), _literal(node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError(type(node).__name__)


def parse_conv_layers(spec: str):
    """``"[(512, 10, 5)] + [(512, 3, 2)] * 4"`` -> list of int triples, read from the syntax tree (no ``eval``)."""
    try:
        layers = [tuple(int(v) for v in layer) for layer in _literal(ast.parse(spec.strip(), mode="eval").body)]
    except (ValueError, SyntaxError, TypeError):
        raise KDConfigError(f"model.conv_feature_layers={spec!r}: expected a list like [(128, 10, 5)] + [(128, 3, 2)] * 4") from None
    require(layers and all(len(c) == 3 for c in layers), f"model.conv_feature_layers={spec!r}: need (channels, kernel, stride) triples")
    return layers


def student_from_cfg(cfg: KDStudentConfig, vocab_size: int, sample_rate: int) -> StreamingStudent:
    """The core student described by ``cfg``."""
    frontend = str(cfg.frontend)
    if frontend in ("fbank", "kaldi_fbank"):
        fe_conf = {k: getattr(cfg, k) for k in FBANK_FIELDS}
        fe_conf["sample_rate"] = sample_rate
    else:
        fe_conf = {"conv_layers": parse_conv_layers(cfg.conv_feature_layers)}
    enc = {k: getattr(cfg, k) for k in ENCODER_FIELDS}
    enc["block_type"] = str(enc["block_type"])
    return streaming_student(frontend=frontend, frontend_conf=fe_conf, vocab_size=vocab_size, sample_rate=sample_rate, **enc)


def read_student_checkpoint(path: str, option: str) -> dict:
    """fairseq state of a ``kd_streaming_student`` checkpoint (``cfg``, ``model`` weights)."""
    from kd_core.teachers.fairseq_teacher import read_fairseq_checkpoint

    require(os.path.isfile(path), f"{option}={path}: file not found; give a kd_streaming_student checkpoint (.pt)")
    state = read_fairseq_checkpoint(path, option)
    name = state["cfg"]["model"].get("_name")
    require(name == MODEL_NAME, f"{option}={path}: a {name} checkpoint, not {MODEL_NAME}")
    return state


@register_model(MODEL_NAME, dataclass=KDStudentConfig)
class KDStreamingStudentModel(BaseFairseqModel):
    """Streaming student + (training only) a frozen teacher kept out of the module tree."""

    def __init__(self, cfg: KDStudentConfig, student: StreamingStudent):
        super().__init__()
        self.cfg, self.student = cfg, student
        self._teacher: List[Teacher] = []  # a list: never in state_dict(), parameters() or train()

    @classmethod
    def build_model(cls, cfg: KDStudentConfig, task):
        dictionary = getattr(task, "target_dictionary", None)
        vocab = len(dictionary) if cfg.ctc_head and dictionary is not None else 0
        student = student_from_cfg(cfg, vocab, int(task.cfg.sample_rate))
        enc = student.encoder
        latency = algorithmic_latency_ms(enc.chunk_size, student.frame_shift_ms, enc.right_context, student.frontend_lookahead_ms)
        logger.info("student: %.2fM parameters, %s", sum(p.numel() for p in student.parameters()) / 1e6,
                    "non-streaming (full context)" if math.isinf(latency) else
                    f"chunk {enc.chunk_size} x {student.frame_shift_ms:g} ms, algorithmic latency {latency:g} ms")
        return cls(cfg, student)

    @property
    def teacher(self) -> Optional[Teacher]:
        return self._teacher[0] if self._teacher else None

    def load_teacher(self) -> None:
        """Load the frozen teacher of ``model.teacher_type/teacher_path`` (nothing if no path is set)."""
        cfg = self.cfg
        if not cfg.teacher_path:
            return
        kind = str(cfg.teacher_type)
        if kind == "fairseq":  # read once: a wav2vec2/HuBERT checkpoint, or one of ours (two-stage KD)
            from kd_core.teachers.fairseq_teacher import load_fairseq_teacher, read_fairseq_checkpoint
            from kd_core.teachers.student_teacher import StudentTeacher

            state = read_fairseq_checkpoint(cfg.teacher_path, "model.teacher_path")
            with torch.random.fork_rng(devices=[]):  # as load_teacher: building it never moves the student's RNG
                if state["cfg"]["model"].get("_name") == MODEL_NAME:
                    teacher = StudentTeacher(student_from_state(state))
                else:
                    teacher = load_fairseq_teacher(cfg.teacher_path, cfg.teacher_data_dir, state)
        else:
            kwargs = {"espnet": {"cachedir": cfg.teacher_cachedir}}.get(kind, {})
            teacher = load_teacher(kind, cfg.teacher_path, **kwargs)
        teacher.set_compute_dtype(str(cfg.teacher_dtype), "model.teacher_dtype")
        require(teacher.sample_rate == self.student.sample_rate, f"model.teacher_path={cfg.teacher_path}: the teacher "
                f"expects {teacher.sample_rate} Hz but task.sample_rate={self.student.sample_rate}; resample the data")
        self._teacher = [teacher.freeze()]
        logger.info("teacher %s: %d layers x %d, %.0f ms frames, %.1fM parameters (frozen)", cfg.teacher_path,
                    teacher.num_layers, teacher.hidden_size, teacher.frame_shift_ms,
                    sum(p.numel() for p in teacher.parameters()) / 1e6)

    def use_teacher_cache(self, kd_loss: torch.nn.Module) -> None:
        """Put the teacher behind ``model.teacher_cache_dir`` (the layers ``kd_loss`` reads), if set."""
        cfg = self.cfg
        if not cfg.teacher_cache_dir or self.teacher is None:
            return
        from kd_core.cache import cached_teacher_for_loss

        conf = {"fairseq": {"data_dir": cfg.teacher_data_dir}}.get(str(cfg.teacher_type), {})
        conf["compute_dtype"] = str(cfg.teacher_dtype)
        self._teacher = [cached_teacher_for_loss(kd_loss, self.teacher, str(cfg.teacher_type), cfg.teacher_path,
                                                 cfg.teacher_cache_dir, str(cfg.teacher_cache_mode),
                                                 str(cfg.teacher_cache_dtype), **conf)]

    def init_from_checkpoint(self) -> None:
        """Initialise from the teacher (``model.init_from_teacher``), then from ``model.init_student``
        (same architecture; chunking may differ)."""
        if self.cfg.init_from_teacher:
            from kd_core.students.init_from_teacher import init_from_teacher

            require(self.teacher is not None, "model.init_from_teacher=true needs model.teacher_path")
            init_from_teacher(self.teacher, self.student.frontend, self.student.ctc)
        if not self.cfg.init_student:
            return
        weights = read_student_checkpoint(self.cfg.init_student, "model.init_student")["model"]
        own = self.student.state_dict()
        shapes = {k: tuple(v.shape) for k, v in own.items()}
        got = {k[len("student."):]: v for k, v in weights.items() if k.startswith("student.")}
        bad = sorted(k for k in own if k not in got or tuple(got[k].shape) != shapes[k])
        require(not bad, f"model.init_student={self.cfg.init_student}: parameters {bad[:3]} missing or of another "
                "shape; the stage-1 student must have the same front-end and encoder sizes")
        self.student.load_state_dict(got, strict=True)
        logger.info("student initialised from %s", self.cfg.init_student)

    def forward(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None, **kwargs) -> dict:
        """``source (B, S)`` waveforms, ``padding_mask (B, S)`` (True = padding) -> fairseq CTC dict."""
        lengths = source.new_full((source.size(0),), source.size(1), dtype=torch.long)
        if padding_mask is not None:
            lengths = (~padding_mask).long().sum(-1)
        out = self.student(source, lengths)
        t = out.hidden[-1].size(1)
        logits = out.logits.transpose(0, 1) if out.logits is not None else None
        return {"encoder_out": logits, "padding_mask": ~lengths_to_mask(out.lengths, t), "student": out}

    def get_logits(self, net_output: dict) -> torch.Tensor:
        return net_output["encoder_out"]

    def get_normalized_probs(self, net_output: dict, log_probs: bool, sample=None) -> torch.Tensor:
        """``(T, B, V)`` (log-)probabilities of the CTC head."""
        logits = net_output["encoder_out"].float()
        return logits.log_softmax(-1) if log_probs else logits.softmax(-1)

    def max_positions(self):
        return None


def student_from_state(state: dict) -> StreamingStudent:
    """The core student stored in a ``kd_streaming_student`` checkpoint state, in eval mode (no teacher)."""
    cfg = state["cfg"]
    model_cfg = KDStudentConfig(**{k: v for k, v in cfg["model"].items() if k != "_name"})
    weights = {k[len("student."):]: v for k, v in state["model"].items() if k.startswith("student.")}
    vocab = weights["ctc.weight"].size(0) if "ctc.weight" in weights else 0
    student = student_from_cfg(model_cfg, vocab, int(cfg["task"].get("sample_rate", 16000)))
    student.load_state_dict(weights, strict=True)
    return student.eval()

