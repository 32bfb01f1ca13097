"""Presets of the teacher-vs-students benchmark (``python -m bench.run_bench``): ``full``, ``quick``, ``smoke``.

One dataclass per run size; every stage reads its sizes and budgets from it, so the three modes run
the same pipeline. The teacher is a torchaudio ``wav2vec2_model`` (waveform CNN, 20 ms frames,
pre-LN transformer, CTC head); students are ``kd_core`` streaming students (log-Mel + Conv2d
front-end, chunked conformer, 40 ms frames) at about 1/12 of the teacher's parameters.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

#: chunk sizes of the KD-vs-scratch sweep in ms (0 = full context, non-streaming)
CHUNKS_MS = (640, 480, 320, 160, 0)
#: chunk of the per-method comparison
METHOD_CHUNK_MS = 480

#: methods listed in the report but not implemented in kd_core yet (rows say "not built yet")
NOT_BUILT = (
    ("hubert_disc", "HuBERT discriminative (codeword) loss"),
    ("frontend_kd", "waveform -> Fbank front-end distillation"),
    ("sew_student", "SEW-style squeezed student"),
    ("rnnt_kd", "RNN-T soft/hard-target KD"),
)


def teacher_conf(dim: int, layers: int, ffn: int, cnn_channels: int, pos_kernel: int = 64, dropout: float = 0.0,
                 cnn: str = "light") -> Dict:
    """``torchaudio.models.wav2vec2_model`` keyword arguments (minus ``aux_num_out``): a waveform CNN with
    per-frame layer norm (padding never changes an utterance's frames), stride 320 = 20 ms at 16 kHz, and a
    pre-LN transformer.

    ``cnn="light"``: 4 layers ``[(C,80,40), (C,3,2), (C,3,2), (C,2,2)]`` (30 ms receptive field); ``"wav2vec2"``:
    wav2vec2's 7 layers ``[(C,10,5)] + [(C,3,2)]*4 + [(C,2,2)]*2`` (25 ms), whose first layers run at 3.2 and
    1.6 kHz: with 96 channels it made a 15M teacher's training step 1.4x slower than the light CNN.
    """
    c = cnn_channels
    layers_cfg = [(c, 80, 40), (c, 3, 2), (c, 3, 2), (c, 2, 2)] if cnn == "light" else [(c, 10, 5)] + [(c, 3, 2)] * 4 + [(c, 2, 2)] * 2
    return dict(extractor_mode="layer_norm", extractor_conv_layer_config=layers_cfg, extractor_conv_bias=False,
                encoder_embed_dim=dim, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=pos_kernel,
                encoder_pos_conv_groups=16, encoder_num_layers=layers, encoder_num_heads=max(1, dim // 64),
                encoder_attention_dropout=0.0, encoder_ff_interm_features=ffn, encoder_ff_interm_dropout=0.0,
                encoder_dropout=dropout, encoder_layer_norm_first=True, encoder_layer_drop=0.0)


def student_conf(dim: int, layers: int, ffn: int, channels: int, n_mels: int, heads: int = 4, kernel: int = 15) -> Dict:
    """``kd_core.students.streaming_student`` keyword arguments (minus ``chunk_size``/``vocab_size``)."""
    return dict(frontend="fbank", frontend_conf=dict(n_mels=n_mels, channels=channels), d_model=dim, num_layers=layers,
                num_heads=heads, ffn_dim=ffn, conv_kernel=kernel, dropout=0.1, num_left_chunks=-1, right_context=0)


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and budgets of one benchmark run (all stages read it)."""

    mode: str
    # data: synthetic corpus (grammar text, unseen test voices) + FSDD (official split)
    num_train: int
    num_valid: int
    num_test: int
    fsdd_max_per_split: Optional[int]  # None: all 2,700 train / 300 test recordings
    # teacher: wall-clock budget, warm-up, peak LR, batch size in seconds of (padded) audio
    teacher: Dict
    teacher_minutes: float
    teacher_max_steps: int
    teacher_lr: float
    teacher_warmup: int
    teacher_batch_s: float
    teacher_time_masks: bool
    teacher_inter_ctc: int  # intermediate CTC on this teacher layer during training (0: off; the head is dropped)
    teacher_sortagrad: bool  # first epoch from short to long utterances
    teacher_augment: bool  # speed perturbation + narrowband (8 kHz) simulation of the teacher's training audio
    # students: the same steps / optimiser / batches / seed for every student
    student: Dict
    student_steps: int
    student_lr: float
    student_warmup: int
    student_batch_s: float
    layer_map: str  # teacher:student pairs of every hidden-layer KD loss here
    stage2_layer_map: str  # stage-1 student -> stage-2 student (same depth)
    # measurements
    rtf_utts: int  # synthetic test utterances timed for RTF / latency (same for every model)
    timing_repeats: int
    seed: int = 0
    jobs: int = 2  # student trainings in parallel (1 thread each)
    ckpt_every_s: float = 120.0  # partial checkpoints of a training (a killed run resumes mid-training)
    chunks_ms: Tuple[int, ...] = CHUNKS_MS
    method_chunk_ms: int = METHOD_CHUNK_MS
    extra: Dict = field(default_factory=dict)

    @property
    def cache_layers(self) -> List[int]:
        """Teacher layers every student method needs (the cache stores them + the CTC logits)."""
        return sorted({int(p.split(":")[0]) for p in self.layer_map.split(",")})

    def to_dict(self) -> Dict:
        return asdict(self)


def get_config(mode: str, seed: int = 0, jobs: int = 2) -> BenchConfig:
    """The preset of ``mode`` (``full``: the committed run, <= 90 min on 2 cores; ``quick``: <= 10 min;
    ``smoke``: 1-3 min, plumbing only)."""
    common = dict(seed=seed, jobs=jobs)
    if mode == "full":
        return BenchConfig(
            mode=mode, num_train=3600, num_valid=200, num_test=300, fsdd_max_per_split=None,
            teacher=teacher_conf(384, 8, 1600, 128), teacher_minutes=30.0, teacher_max_steps=100_000,
            teacher_lr=2e-3, teacher_warmup=50, teacher_batch_s=8.0, teacher_time_masks=True, teacher_inter_ctc=4,
            teacher_sortagrad=True, teacher_augment=True,
            student=student_conf(96, 6, 352, 16, 80), student_steps=450, student_lr=2e-3, student_warmup=45,
            student_batch_s=40.0, layer_map="3:2,5:4,8:6", stage2_layer_map="2:2,4:4,6:6", rtf_utts=30,
            timing_repeats=3, **common)
    if mode == "quick":
        return BenchConfig(
            mode=mode, num_train=400, num_valid=50, num_test=60, fsdd_max_per_split=150,
            teacher=teacher_conf(256, 6, 1024, 64), teacher_minutes=2.5, teacher_max_steps=100_000,
            teacher_lr=2e-3, teacher_warmup=30, teacher_batch_s=8.0, teacher_time_masks=True, teacher_inter_ctc=3,
            teacher_sortagrad=True, teacher_augment=True,
            student=student_conf(64, 4, 192, 16, 40), student_steps=120, student_lr=2e-3, student_warmup=12,
            student_batch_s=32.0, layer_map="2:1,4:3,6:4", stage2_layer_map="1:1,3:3,4:4", rtf_utts=10,
            timing_repeats=2, ckpt_every_s=60.0, **common)
    if mode == "smoke":
        return BenchConfig(
            mode=mode, num_train=24, num_valid=6, num_test=6, fsdd_max_per_split=6,
            teacher=teacher_conf(64, 2, 128, 32, pos_kernel=16), teacher_minutes=0.25, teacher_max_steps=8,
            teacher_lr=1e-3, teacher_warmup=2, teacher_batch_s=12.0, teacher_time_masks=True, teacher_inter_ctc=1,
            teacher_sortagrad=True, teacher_augment=True,
            student=student_conf(24, 2, 48, 8, 40), student_steps=4, student_lr=2e-3, student_warmup=1,
            student_batch_s=12.0, layer_map="1:1,2:2", stage2_layer_map="1:1,2:2", rtf_utts=3, timing_repeats=1,
            ckpt_every_s=30.0, **common)
    raise ValueError(f"mode={mode!r}: use full, quick or smoke")
