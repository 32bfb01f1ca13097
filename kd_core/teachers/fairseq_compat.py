"""``kd_hubert_ctc``: fairseq's own ``HubertCtc`` with the one config field it lacks.

Imported only when fairseq is wanted (the fairseq loader, the fairseq plugin); importing it registers
the model name ``kd_hubert_ctc`` in fairseq's model registry.

fairseq 0.12.x cannot build ``hubert_ctc`` at all: ``HubertEncoder.__init__`` reads
``cfg.autoregressive``, which ``HubertCtcConfig`` does not define (fairseq issue #4916, open; the fix,
PR #4917, was closed unmerged), so fine-tuning HuBERT with CTC and loading any ``hubert_ctc``
checkpoint fail with ``ConfigAttributeError``. This registration subclasses fairseq's model and
config unchanged except for ``autoregressive: false``, so ``fairseq-hydra-train model._name=kd_hubert_ctc``
fine-tunes HuBERT exactly as fairseq's ``hubert_ctc`` would. The weights are fairseq's layout
(``w2v_encoder.w2v_model.*``, ``w2v_encoder.proj``); ``tools/build_zoo.py`` ships such checkpoints
under fairseq's name ``hubert_ctc`` (as official fine-tuned HuBERT checkpoints are named), and the
fairseq teacher loader builds every ``hubert_ctc`` checkpoint through this class.
"""
from dataclasses import dataclass, field

from fairseq.models import register_model
from fairseq.models.hubert.hubert_asr import HubertCtc, HubertCtcConfig


@dataclass
class KDHubertCtcConfig(HubertCtcConfig):
    autoregressive: bool = field(default=False, metadata={"help": "read by fairseq's HubertEncoder; CTC is not autoregressive"})


@register_model("kd_hubert_ctc", dataclass=KDHubertCtcConfig)
class KDHubertCtc(HubertCtc):
    """fairseq's ``HubertCtc``, buildable (see the module docstring)."""


def buildable_model_name(name: str) -> str:
    """The registered model to build a checkpoint's ``model._name`` with (``hubert_ctc`` -> ``kd_hubert_ctc``)."""
    return "kd_hubert_ctc" if name == "hubert_ctc" and "autoregressive" not in HubertCtcConfig.__dataclass_fields__ else name
