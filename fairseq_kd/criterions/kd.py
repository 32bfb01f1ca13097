"""KD criteria: each binds one core loss (:data:`kd_core.losses.registry.KD_LOSSES`) to fairseq.

``loss = kd_weight * KD + ctc_weight * CTC`` (CTC only on batches with transcripts), computed by
:func:`kd_core.distiller.kd_objective` and returned as fairseq expects: the per-utterance sum with
``sample_size`` = utterances, so gradients are per-utterance means exactly as in ESPnet. Every
config field after the shared ones is an argument of the core loss with the same name and default
(a test keeps them equal); arguments describing the teacher/student are derived, never set.
The loss heads and branches are parameters of the criterion: fairseq's trainer optimises and
checkpoints them (``criterion`` entry) and a decoding model never needs them. Validation reports
greedy-CTC ``uer``/``wer`` like fairseq's ``ctc`` criterion.
"""

import logging
import os
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional

import torch
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging.meters import safe_round

from kd_core.distiller import check_weights, kd_context, kd_objective
from kd_core.errors import require
from kd_core.losses.lfmmi_graph import cached_den_graph
from kd_core.losses.registry import KDContext, build_kd_loss, user_options
from kd_core.numerics import NonFiniteGuard

from ..errors import one_line_errors

logger = logging.getLogger(__name__)


@dataclass
class KDCriterionConfig(FairseqDataclass):
    kd_weight: float = field(default=1.0, metadata={"help": "weight of the KD loss (0: train from transcripts only)"})
    ctc_weight: float = field(default=1.0, metadata={"help": "weight of the student's CTC loss on batches with transcripts"})
    post_process: str = field(default="letter", metadata={"help": "how validation WER turns units into words"})
    kd_max_nonfinite: int = field(default=20, metadata={
        "help": "a step with a nan/inf KD term gets zero gradient and is counted (kd_skipped); this many in a row stop "
                "training with one line (0: never)"})


SHARED_FIELDS = {f.name for f in fields(KDCriterionConfig)}


class KDCriterion(FairseqCriterion):
    """Base of the KD criteria; subclasses set :attr:`loss_name` and their config dataclass."""

    loss_name = ""
    config_class = KDCriterionConfig
    #: config fields of the adapter that are not options of the core loss
    adapter_fields: frozenset = frozenset(SHARED_FIELDS)

    @one_line_errors()
    def __init__(self, cfg: KDCriterionConfig, task):
        super().__init__(task)
        self.cfg = cfg
        self._nonfinite = NonFiniteGuard(cfg.kd_max_nonfinite, "criterion.kd_max_nonfinite")
        model = getattr(task, "kd_model", None)
        require(model is not None and hasattr(model, "student"), "criterion kd_*: needs task._name=kd_audio and "
                "model._name=kd_streaming_student")
        check_weights("criterion.", kd_weight=cfg.kd_weight, ctc_weight=cfg.ctc_weight)
        self.kd_weight, self.ctc_weight = float(cfg.kd_weight), float(cfg.ctc_weight)
        self.kd_loss = None
        if self.kd_weight > 0:
            require(model.teacher is not None, f"criterion.kd_weight={self.kd_weight} needs a teacher: set "
                    "model.teacher_path (or criterion.kd_weight=0 to train from transcripts only)")
            self.kd_loss = build_kd_loss(self.loss_name, self.loss_options(), self.context(model), option="criterion")
            model.use_teacher_cache(self.kd_loss)
        require(self.ctc_weight == 0 or model.student.ctc is not None, "criterion.ctc_weight > 0 but the student has "
                "no CTC head: set task.labels (transcripts) and model.ctc_head=true, or criterion.ctc_weight=0")
        logger.info("%s: kd_weight=%g ctc_weight=%g, KD loss %s", type(self).__name__, self.kd_weight, self.ctc_weight,
                    type(self.kd_loss).__name__ if self.kd_loss is not None else None)

    def loss_options(self) -> Dict[str, object]:
        """This criterion's fields that are options of the core loss (values as plain Python types)."""
        opts = user_options(type(self).core_loss())
        return {f.name: _plain(getattr(self.cfg, f.name)) for f in fields(self.config_class) if f.name in opts}

    @classmethod
    def core_loss(cls) -> type:
        from kd_core.losses.registry import KD_LOSSES

        return KD_LOSSES[cls.loss_name]

    def context(self, model) -> KDContext:
        return kd_context(model.teacher, model.student, self.den_graph, codebook_option="model.teacher_path")

    def den_graph(self):
        raise NotImplementedError  # only the LF-MMI criterion has one

    def forward(self, model, sample, reduce: bool = True):
        net_output = model(**sample["net_input"])
        student = net_output["student"]
        teacher_out = None
        if self.kd_weight > 0:
            source = sample["net_input"]["source"]
            mask = sample["net_input"].get("padding_mask")
            lengths = (~mask).long().sum(-1) if mask is not None else torch.full_like(student.lengths, source.size(1))
            with torch.no_grad():
                teacher_out = model.teacher.to(source.device)(source, lengths)
        targets, target_lengths = sample.get("target"), sample.get("target_lengths")
        loss, denom, stats = kd_objective(self.kd_loss, student, teacher_out, self.kd_weight, self.ctc_weight,
                                          targets, target_lengths)
        b = int(denom)
        with one_line_errors():  # too many non-finite steps in a row: the run ends with one line
            skipped = model.training and self.kd_weight > 0 and not self._nonfinite.check(torch.tensor(stats.get("kd", 0.0)))
        if skipped:  # fairseq raises on a non-finite gradient outside AMP: the step gets zero gradient instead
            loss = sum((p * 0).sum() for p in model.parameters() if p.requires_grad)
            stats = {}
        log = {"loss": loss.item(), "ntokens": sample.get("ntokens", b), "nsentences": b, "sample_size": b}
        if model.training and self.kd_weight > 0:
            log["_stat_kd_skipped"] = float(skipped) * b
        log.update({f"_stat_{k}": v * b for k, v in stats.items() if k != "loss"})
        if not model.training and targets is not None and student.logits is not None:
            log.update(self._errors(student.logits, student.lengths, targets))
        return loss, b, log

    def _errors(self, logits: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor) -> Dict[str, int]:
        """Greedy-CTC unit and word errors of a batch (fairseq's ``ctc`` criterion's counts)."""
        import editdistance
        from fairseq.data.data_utils import post_process

        from kd_core.data import greedy_ctc

        d = self.task.target_dictionary
        out = {"c_errors": 0, "c_total": 0, "w_errors": 0, "w_total": 0}
        for hyp, tgt in zip(greedy_ctc(logits, lengths), targets):
            ref = [int(t) for t in tgt if int(t) not in (d.pad(), d.eos())]
            out["c_errors"] += editdistance.eval(hyp, ref)
            out["c_total"] += len(ref)
            ref_w = post_process(d.string(torch.tensor(ref)), self.cfg.post_process).split()
            hyp_w = post_process(d.string(torch.tensor(hyp, dtype=torch.long)), self.cfg.post_process).split()
            out["w_errors"] += editdistance.eval(hyp_w, ref_w)
            out["w_total"] += len(ref_w)
        return out

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        sample_size, n = total("sample_size"), total("nsentences")
        metrics.log_scalar("loss", total("loss") / max(sample_size, 1), sample_size, round=4)
        metrics.log_scalar("nsentences", n)
        for key in sorted({k for log in logging_outputs for k in log if k.startswith("_stat_")}):
            metrics.log_scalar(key[len("_stat_"):], total(key) / max(n, 1), n, round=4)
        for key in ("c_errors", "c_total", "w_errors", "w_total"):
            metrics.log_scalar(f"_{key}", total(key))
        if total("c_total") > 0:
            metrics.log_derived("uer", lambda m: safe_round(m["_c_errors"].sum * 100.0 / m["_c_total"].sum, 3)
                                if m["_c_total"].sum > 0 else float("nan"))
        if total("w_total") > 0:
            metrics.log_derived("wer", lambda m: safe_round(m["_w_errors"].sum * 100.0 / m["_w_total"].sum, 3)
                                if m["_w_total"].sum > 0 else float("nan"))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def _plain(value):
    """fairseq ``ChoiceEnum`` values -> their strings; everything else unchanged."""
    return value.value if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)) else value


# ---- hidden-layer KD (DistilHuBERT-style heads) + CTC -------------------------------------------------
@dataclass
class LayerwiseCriterionConfig(KDCriterionConfig):
    layer_map: str = field(default="auto", metadata={
        "help": "teacher:student layer pairs, e.g. '4:2,8:4,12:6' (quote it); 'auto': student layers at 1/3, 2/3, 3/3 "
                "depth, each to the teacher layer at the same relative depth"})
    l1_weight: float = field(default=1.0, metadata={"help": "L1 term weight"})
    l2_weight: float = field(default=0.0, metadata={"help": "L2 (MSE) term weight"})
    cos_weight: float = field(default=1.0, metadata={"help": "-log sigmoid(cosine) term weight"})
    heads: ChoiceEnum(["linear", "none"]) = field(default="linear", metadata={"help": "projection heads per pair"})
    rate_mode: ChoiceEnum(["pool", "stack"]) = field(default="pool", metadata={
        "help": "how teacher frames (20 ms) meet the student's (40 ms): average or concatenate"})
    target_norm: bool = field(default=False, metadata={
        "help": "layer-normalise each teacher frame before the hidden-layer loss (pre-LN teachers)"})


@register_criterion("kd_layerwise", dataclass=LayerwiseCriterionConfig)
class LayerwiseKDCriterion(KDCriterion):
    """Hidden-layer KD with a layer map and projection heads, plus CTC on labelled batches."""

    loss_name = "layerwise"
    config_class = LayerwiseCriterionConfig


# ---- auxiliary full-context branches + APC (Shim et al. 2023) ------------------------------------------
@dataclass
class AuxAPCCriterionConfig(KDCriterionConfig):
    layer_map: str = field(default="auto", metadata={"help": "teacher:student pairs (student layers >= 1) or 'auto'"})
    use_aux: bool = field(default=True, metadata={"help": "auxiliary full-context branch per mapped student layer"})
    use_apc: bool = field(default=True, metadata={"help": "APC head predicting the teacher apc_shift frames ahead"})
    share_weights: bool = field(default=False, metadata={"help": "the branch of layer l is layer l itself"})
    apc_shift: int = field(default=2, metadata={"help": "APC: student frames ahead"})
    aux_weight: float = field(default=1.0, metadata={"help": "weight of the auxiliary-branch loss"})
    apc_weight: float = field(default=1.0, metadata={"help": "weight of the APC loss"})
    l1_weight: float = field(default=1.0, metadata={"help": "L1 term weight"})
    l2_weight: float = field(default=0.0, metadata={"help": "L2 term weight"})
    cos_weight: float = field(default=1.0, metadata={"help": "-log sigmoid(cosine) term weight"})
    target_norm: bool = field(default=False, metadata={
        "help": "layer-normalise each teacher frame before the hidden-layer loss (pre-LN teachers)"})


@register_criterion("kd_aux_apc", dataclass=AuxAPCCriterionConfig)
class AuxAPCKDCriterion(KDCriterion):
    """Layer KD through auxiliary non-streaming branches plus APC future prediction."""

    loss_name = "aux_apc"
    config_class = AuxAPCCriterionConfig


# ---- DistillW2V2: hidden MSE + modified LF-MMI prediction-layer KD --------------------------------------
@dataclass
class LFMMICriterionConfig(KDCriterionConfig):
    layer_map: str = field(default="", metadata={"help": "hidden-layer pairs for (1 - alpha) * L_hidden ('auto' works)"})
    alpha: float = field(default=0.8, metadata={"help": "L = (1 - alpha) * L_hidden + alpha * L_pred"})
    beta: float = field(default=0.8, metadata={"help": "L_pred = beta * MMI + (1 - beta) * MSE(log-probs)"})
    numerator: ChoiceEnum(["soft", "hard"]) = field(default="soft", metadata={
        "help": "soft: teacher occupancies on the denominator graph; hard: CTC graph of the teacher's 1-best"})
    leaky_hmm: float = field(default=0.0, metadata={"help": "leaky-HMM coefficient (0: off)"})
    l1_weight: float = field(default=0.0, metadata={"help": "L_hidden L1 weight"})
    l2_weight: float = field(default=1.0, metadata={"help": "L_hidden L2 (MSE) weight"})
    cos_weight: float = field(default=0.0, metadata={"help": "L_hidden cosine weight"})
    heads: ChoiceEnum(["linear", "none"]) = field(default="linear", metadata={"help": "projection heads per pair"})
    topology: ChoiceEnum(["ctc", "2state"]) = field(default="ctc", metadata={
        "help": "ctc, or 2state: each token emitted on exactly one frame, then optional blanks"})
    target_norm: bool = field(default=False, metadata={
        "help": "layer-normalise each teacher frame before the hidden-layer loss (pre-LN teachers)"})
    den_graph_source: ChoiceEnum(["transcripts", "teacher"]) = field(default="transcripts", metadata={
        "help": "estimate the denominator bigram from <split>.<task.labels> or from the teacher's 1-best on <split>.tsv"})
    den_graph_split: str = field(default="train", metadata={"help": "split whose transcripts / audio estimate the bigram"})
    den_graph_max_utts: int = field(default=2000, metadata={"help": "den_graph_source=teacher: utterances decoded"})
    den_graph_dir: Optional[str] = field(default=None, metadata={"help": "cache folder for the denominator graph"})


@register_criterion("kd_lfmmi", dataclass=LFMMICriterionConfig)
class LFMMIKDCriterion(KDCriterion):
    """DistillW2V2's objective: needs a CTC teacher over the same dictionary as the student."""

    loss_name = "lfmmi"
    config_class = LFMMICriterionConfig
    adapter_fields = frozenset(SHARED_FIELDS | {"den_graph_source", "den_graph_split", "den_graph_max_utts", "den_graph_dir"})

    def den_graph(self):
        task, cfg = self.task, self.cfg
        d = task.target_dictionary
        if _plain(cfg.den_graph_source) == "teacher":
            seqs = self._teacher_sequences()
        else:
            require(task.cfg.labels, "criterion kd_lfmmi: den_graph_source=transcripts needs task.labels "
                    "(or use den_graph_source=teacher)")
            path = os.path.join(task.cfg.data, f"{cfg.den_graph_split}.{task.cfg.labels}")
            require(os.path.isfile(path), f"{path}: not found; criterion.den_graph_split names the split whose "
                    "transcripts estimate the denominator graph")
            with open(path, encoding="utf-8") as f:
                seqs = [d.encode_line(line, append_eos=False, add_if_not_exist=False).tolist() for line in f]
        return cached_den_graph(seqs, len(d), cfg.den_graph_dir, topology=_plain(cfg.topology))

    def _teacher_sequences(self) -> List[List[int]]:
        from kd_core.data import load_audio, read_wav_list
        from kd_core.losses.lfmmi import teacher_den_sequences

        model, cfg = self.task.kd_model, self.cfg
        utts = read_wav_list(manifest=os.path.join(self.task.cfg.data, f"{cfg.den_graph_split}.tsv"))[: cfg.den_graph_max_utts]
        logger.info("denominator graph: decoding %d utterances of %s with the teacher", len(utts), cfg.den_graph_split)
        waves = (load_audio(path, self.task.cfg.sample_rate) for _, path in utts)
        return teacher_den_sequences(model.teacher, waves, model.student.frame_shift_ms, _plain(cfg.topology))


# ---- HuBERT discriminative (codeword) KD on top of layer regression ------------------------------------
@dataclass
class HubertDiscCriterionConfig(LayerwiseCriterionConfig):
    """The layer-KD options (regression; the last student layer of the map also feeds the codeword head) + disc_weight."""

    disc_weight: float = field(default=1.0, metadata={"help": "weight of KL(p_T || p_S) over the teacher's codebook"})


@register_criterion("kd_hubert_disc", dataclass=HubertDiscCriterionConfig)
class HubertDiscKDCriterion(KDCriterion):
    """Layer regression + KL over a pre-trained HuBERT teacher's own codebook (model.teacher_path)."""

    loss_name = "hubert_disc"
    config_class = HubertDiscCriterionConfig
