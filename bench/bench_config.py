"""Presets of the teacher-vs-students benchmark (``python -m bench.run_bench``): ``full``, ``quick``, ``smoke``.

One dataclass per run size; every stage reads its sizes and budgets from it, so the three modes run
the same pipeline. The teacher is the shipped zoo model ``zoo/hubert_mini_ctc`` (fairseq HuBERT pre-trained
without labels, then fine-tuned for letter CTC), loaded through ``load_teacher("fairseq", ...)``; the
students are ``kd_core`` streaming students (log-Mel + Conv2d front-end, chunked conformer, 40 ms frames)
at 1/12 of its parameters (preset ``s12_wide``), trained on the teacher's own labelled set (the same
corpus, regenerated from its seed) with the teacher's letter inventory.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

#: chunk sizes of the KD-vs-scratch sweep in ms (0 = full context, non-streaming)
CHUNKS_MS = (480, 160, 0)
#: chunk of the per-method comparison, the low-resource setting and the convergence check
METHOD_CHUNK_MS = 480
#: the teacher (relative to the repository root); its ``dict.ltr.txt`` lies beside it
ZOO_TEACHER = "zoo/hubert_mini_ctc/hubert_mini_ctc.pt"
#: the pre-trained HuBERT whose codebook (final_proj + label embeddings) the discriminative loss reads
ZOO_CODEBOOK_TEACHER = "zoo/hubert_mini/hubert_mini.pt"
#: the job suites: ``main`` (KD vs scratch: chunk sweep, low resource, convergence check), ``methods`` (every other
#: method and the shape presets at the method chunk, same budget as layer KD) and ``rnnt`` (transducer students:
#: soft vs hard targets, low-resource setting, at the method chunk)
SUITES = ("main", "methods", "rnnt")
#: methods-suite rows of the shape presets (kd_core.students.presets): layer KD (``layer_map auto``) at the method chunk
PRESET_ROWS = ("s12_deep", "s12_sew", "s8_wide", "s4_wide")
#: the rnnt suite's transducer teacher: this shape preset, non-streaming, trained on every label
RNNT_TEACHER_SHAPE = "s4_wide"
#: student steps of the full run per suite: the main suite's KD-vs-scratch comparisons nearer convergence (doubling
#: 2,400 steps changed the scratch student's valid WER by -15 % relative, doubling 4,800 by -9.6 %: more does not fit
#: the 150 min budget); the methods suite compares methods at an equal, smaller budget
FULL_STEPS = {"main": 4800, "methods": 2400}
#: transformer layers of the zoo teacher (the ``auto`` layer maps of the preset rows pair with them)
TEACHER_LAYERS = 8

#: rows of the main suite whose numbers live elsewhere or do not exist yet (key, method, where)
NOT_BUILT = (
    ("aux_apc", "aux + APC", "in the methods suite"),
    ("lfmmi", "LF-MMI (DistillW2V2)", "in the methods suite"),
    ("twostage", "two-stage (LF-MMI), DistillW2V2", "in the methods suite"),
    ("hubert_disc", "HuBERT discriminative (codeword) loss", "in the methods suite"),
    ("frontend_kd", "waveform -> Fbank front-end distillation", "in the methods suite"),
    ("sew_student", "SEW-style squeezed student", "in the methods suite"),
    ("rnnt_kd", "RNN-T soft/hard-target KD", "in the rnnt suite"),
)


def labelled_corpus(**overrides) -> Dict:
    """``make_synthetic_corpus`` arguments of the zoo teacher's labelled set (``tools.build_zoo.LABELLED``), resized."""
    from tools.build_zoo import LABELLED

    return {**LABELLED, **overrides}


def student_conf(dim: int, layers: int, ffn: int, channels: int, n_mels: int, heads: int = 4, kernel: int = 15) -> Dict:
    """``kd_core.students.streaming_student`` keyword arguments (minus ``chunk_size``/``vocab_size``)."""
    return dict(frontend="fbank", frontend_conf=dict(n_mels=n_mels, channels=channels), d_model=dim, num_layers=layers,
                num_heads=heads, ffn_dim=ffn, conv_kernel=kernel, dropout=0.1, num_left_chunks=-1, right_context=0)


def preset_student(name: str) -> Dict:
    """A :mod:`kd_core.students.presets` shape as the benchmark trains it (dropout 0.1, kernel 15, any left context)."""
    from kd_core.students.presets import preset_conf

    return {**preset_conf(name), "conv_kernel": 15, "dropout": 0.1, "num_left_chunks": -1, "right_context": 0}


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and budgets of one benchmark run (all stages read it)."""

    mode: str
    # data: the teacher's labelled set (synthetic, closed WordNet vocabulary, unseen test voices) + FSDD (official split)
    corpus: Dict  # tools.make_corpus.make_synthetic_corpus arguments
    fsdd_max_per_split: Optional[int]  # None: all 2,700 train / 300 test recordings
    teacher_path: str  # fairseq letter-CTC checkpoint, relative to the repository root
    # students: the same steps / optimiser / batches / seed for every student
    student: Dict
    student_steps: int
    student_lr: float
    student_warmup: int
    student_batch_s: float
    layer_map: str  # teacher:student pairs of every hidden-layer KD loss here
    stage2_layer_map: str  # stage-1 student -> stage-2 student (same depth)
    lowres_fraction: float  # low-resource setting: labels for this share of the training set, the rest is audio only
    convergence_factor: int  # the scratch student at the method chunk is also trained this many times longer
    # measurements
    rtf_utts: int  # synthetic test utterances timed for RTF / latency (same for every model)
    timing_repeats: int
    suite: str = "main"  # which students (SUITES)
    seed: int = 0
    jobs: int = 2  # student trainings in parallel (1 thread each)
    ckpt_every_s: float = 120.0  # partial checkpoints of a training (a killed run resumes mid-training)
    chunks_ms: Tuple[int, ...] = CHUNKS_MS
    method_chunk_ms: int = METHOD_CHUNK_MS
    extra: Dict = field(default_factory=dict)

    @property
    def cache_layers(self) -> List[int]:
        """Teacher layers every student of the suite needs (the cache stores them + the CTC logits): the layer map's,
        and in the methods suite those of every preset's ``auto`` map and layer 0 (front-end KD)."""
        layers = {int(p.split(":")[0]) for p in self.layer_map.split(",")}
        if self.suite == "methods":
            from kd_core.losses.layerwise import auto_layer_map
            from kd_core.students.presets import preset_conf

            depths = [preset_conf(name)["num_layers"] for name in PRESET_ROWS]
            layers |= {t for d in depths for t, _ in auto_layer_map(TEACHER_LAYERS, d)} | {0}
        return sorted(layers)

    def to_dict(self) -> Dict:
        return asdict(self)


def get_config(mode: str, seed: int = 0, jobs: int = 2, suite: str = "main") -> BenchConfig:
    """The preset of ``mode`` (``full``: the committed run, <= 150 min on 2 cores; ``quick``: <= 10 min;
    ``smoke``: 1-3 min, plumbing only) for job suite ``suite``."""
    if suite not in SUITES:
        raise ValueError(f"suite={suite!r}: use one of {', '.join(SUITES)}")
    common = dict(seed=seed, jobs=jobs, teacher_path=ZOO_TEACHER, lowres_fraction=0.1, convergence_factor=2, suite=suite)
    if mode == "full" and suite == "rnnt":  # transducer steps cost ~2x CTC ones: 2/3 of the budget, all seven rows alike
        from dataclasses import replace

        return replace(get_config("full", seed, jobs, "main"), suite="rnnt", student_steps=1600)
    if mode == "full":
        return BenchConfig(
            mode=mode, corpus=labelled_corpus(), fsdd_max_per_split=None,
            student=preset_student("s12_wide"), student_steps=FULL_STEPS[suite], student_lr=2e-3, student_warmup=120,
            student_batch_s=40.0, layer_map="3:1,5:2,8:3", stage2_layer_map="1:1,2:2,3:3", rtf_utts=30,
            timing_repeats=3, **common)
    if mode == "quick":
        return BenchConfig(
            mode=mode, corpus=labelled_corpus(num_train=400, num_valid=50, num_test=60), fsdd_max_per_split=150,
            student=preset_student("s12_wide"), student_steps=200, student_lr=2e-3, student_warmup=20,
            student_batch_s=32.0, layer_map="3:1,5:2,8:3", stage2_layer_map="1:1,2:2,3:3", rtf_utts=10,
            timing_repeats=2, ckpt_every_s=60.0, **common)
    if mode == "smoke":
        return BenchConfig(
            mode=mode, corpus=labelled_corpus(num_train=24, num_valid=6, num_test=6), fsdd_max_per_split=6,
            student=student_conf(24, 2, 48, 8, 40), student_steps=4, student_lr=2e-3, student_warmup=1,
            student_batch_s=12.0, layer_map="4:1,8:2", stage2_layer_map="1:1,2:2", rtf_utts=3, timing_repeats=1,
            ckpt_every_s=30.0, **common)
    raise ValueError(f"mode={mode!r}: use full, quick or smoke")
