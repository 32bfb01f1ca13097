"""ESPnet ASR model + frozen teacher + KD losses from :mod:`kd_core`.

The student is an ordinary :class:`ESPnetASRModel` (any ESPnet front-end/encoder/decoder,
or the core's streaming front-end and chunked encoder). Training adds the weighted KD term
(:func:`kd_core.distiller.kd_term_parts`, the core's one KD objective, averaged over the global batch under DDP) to the ASR loss; the teacher is held outside the module tree, so it is never saved, never
optimised and never switched to train mode.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.torch_utils.device_funcs import force_gatherable

from kd_core.distiller import check_weights, global_batch_mean, kd_term_parts
from kd_core.errors import require
from kd_core.hooks import capture_layers
from kd_core.losses.registry import needs_lattice, needs_logits
from kd_core.numerics import NonFiniteGuard
from kd_core.teachers.base import Teacher

from .encoder import KDChunkedEncoder

logger = logging.getLogger(__name__)

#: ESPnet encoders whose per-layer outputs are not frame-aligned during training (block processing).
BLOCK_ENCODERS = ("ContextualBlockConformerEncoder", "ContextualBlockTransformerEncoder")


def encoder_num_layers(encoder: torch.nn.Module) -> int:
    """Number of layers of an ESPnet or core encoder (``len(encoder.encoders)`` for ESPnet's)."""
    if isinstance(encoder, KDChunkedEncoder):
        return encoder.num_layers
    layers = getattr(encoder, "encoders", None)
    require(layers is not None, f"encoder {type(encoder).__name__}: has no 'encoders' layer list; "
            "hidden-layer KD supports ESPnet's transformer/conformer-style encoders and kd_chunked")
    return len(layers)


class ESPnetASRKDModel(ESPnetASRModel):
    """:class:`ESPnetASRModel` trained with ``asr_weight * loss_asr + kd_weight * loss_kd``.

    Args (in addition to :class:`ESPnetASRModel`'s, all via ``--model_conf``):
        kd_weight: weight of the KD term (per-frame mean over valid student frames).
        asr_weight: weight of the ASR loss (CTC/attention mix of ``ctc_weight``); used
            only for batches with transcripts.
        kd_max_nonfinite: a training step whose KD term is ``nan``/``inf`` is skipped (the loss stays
            non-finite, so ESPnet's trainer skips the update as for a non-finite gradient norm) and counted
            (``kd_skipped`` in the reporter); this many in a row stop training with one line (0: never).
    The task calls :meth:`attach_teacher` after building. ``forward`` returns ESPnet's
    ``(loss, stats, weight)`` with ``stats``: ``loss``, ``loss_asr``, ``loss_kd`` and the KD
    loss's own terms (``kd_l1_t4s2``, ...), so the reporter, tensorboard and plots show them.
    """

    def __init__(self, *args, kd_weight: float = 1.0, asr_weight: float = 1.0, kd_max_nonfinite: int = 20,
                 joint_network: Optional[torch.nn.Module] = None, **kwargs):
        super().__init__(*args, joint_network=None, **kwargs)
        if joint_network is not None:
            self._use_transducer(kwargs["decoder"], joint_network, kwargs.get("sym_space", "<space>"),
                                 kwargs.get("sym_blank", "<blank>"), kwargs.get("report_cer", True), kwargs.get("report_wer", True))
        check_weights("--model_conf ", kd_weight=kd_weight, asr_weight=asr_weight)
        self.kd_weight, self.asr_weight = float(kd_weight), float(asr_weight)
        self._nonfinite = NonFiniteGuard(kd_max_nonfinite, "--model_conf kd_max_nonfinite")
        self.kd_loss: Optional[torch.nn.Module] = None
        self._teacher: List[Teacher] = []  # a list keeps the teacher out of state_dict/parameters/train()
        self._last_encode: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def _use_transducer(self, decoder, joint_network, sym_space: str, sym_blank: str, report_cer: bool, report_wer: bool) -> None:
        """ESPnet's transducer branch (``--decoder transducer``: its ``TransducerDecoder`` and ``JointNetwork``, its
        ``_calc_transducer_loss``) with ``torchaudio.transforms.RNNTLoss`` as the criterion: ESPnetASRModel imports
        ``warprnnt_pytorch``, which has no PyPI wheel; both take ``(logits, int32 targets, frames, target lengths)``,
        apply log-softmax themselves and average over utterances."""
        from espnet2.asr.transducer.error_calculator import ErrorCalculatorTransducer
        from torchaudio.transforms import RNNTLoss

        self.use_transducer_decoder = True
        self.decoder, self.joint_network = decoder, joint_network
        self.criterion_transducer = RNNTLoss(blank=self.blank_id, reduction="mean")
        self.error_calculator, self.error_calculator_trans = None, None
        if report_cer or report_wer:
            self.error_calculator_trans = ErrorCalculatorTransducer(decoder, joint_network, self.token_list, sym_space,
                                                                    sym_blank, report_cer=report_cer, report_wer=report_wer)

    def lattice(self, encoder_out: torch.Tensor, encoder_out_lens: torch.Tensor, text: torch.Tensor,
                text_lengths: torch.Tensor):
        """``(TransducerLattice, targets (B, U), target lengths)`` of this transducer on the reference ``text``
        (ESPnet's ``get_transducer_task_io``: blank-prefixed decoder input, blank-padded int32 targets)."""
        from espnet2.asr_transducer.utils import get_transducer_task_io

        from kd_core.losses.rnnt_kd import TransducerLattice

        decoder_in, target, _, u_len = get_transducer_task_io(text, encoder_out_lens, ignore_id=self.ignore_id,
                                                              blank_id=self.blank_id)
        self.decoder.set_device(encoder_out.device)
        return TransducerLattice(self.joint_network, encoder_out, encoder_out_lens, self.decoder(decoder_in)), target, u_len

    @property
    def teacher(self) -> Optional[Teacher]:
        return self._teacher[0] if self._teacher else None

    def attach_teacher(self, teacher: Optional[Teacher], kd_loss: torch.nn.Module) -> None:
        """Set the frozen teacher (``None``: targets must be passed in) and the KD loss module."""
        self._teacher = [teacher.freeze()] if teacher is not None else []
        self.kd_loss = kd_loss

    @property
    def num_student_layers(self) -> int:
        return encoder_num_layers(self.encoder)

    @contextmanager
    def _capture_layers(self) -> Iterator[List[torch.Tensor]]:
        """Record the ESPnet encoder's layer outputs during a forward (the core encoder keeps its own)."""
        layers = None if isinstance(self.encoder, KDChunkedEncoder) else getattr(self.encoder, "encoders", None)
        if layers is None or type(self.encoder).__name__ in BLOCK_ENCODERS:
            yield []
            return
        with capture_layers(layers) as got:
            yield got

    def _student_hidden(self, got: List[torch.Tensor], encoder_out: torch.Tensor) -> List[Optional[torch.Tensor]]:
        """List indexed by layer; the last entry is always the encoder output (what CTC sees)."""
        n = self.num_student_layers
        if isinstance(self.encoder, KDChunkedEncoder):
            hidden = list(self.encoder.hidden_states)
        else:
            hidden = list(got[: n + 1]) + [None] * (n + 1 - len(got))
        hidden[n] = encoder_out
        return hidden

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor, text: Optional[torch.Tensor] = None,
                text_lengths: Optional[torch.Tensor] = None, **kwargs) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """``speech (B, S)``, ``speech_lengths (B,)``, optional ``text (B, U)`` -> ``(loss, stats, weight=B)``."""
        batch_size = speech.size(0)
        with self._capture_layers() as got:
            if text is not None and self.asr_weight > 0:
                loss_asr, stats, _ = super().forward(speech, speech_lengths, text, text_lengths, **kwargs)
                # super() ran encode(); its output is the last captured state (or the core encoder's)
                encoder_out, encoder_out_lens = self._last_encode
            else:
                loss_asr, stats = None, {}
                self.encode(speech, speech_lengths)
                encoder_out, encoder_out_lens = self._last_encode
        loss = loss_asr * self.asr_weight if loss_asr is not None else encoder_out.new_zeros(())
        if loss_asr is not None:
            stats["loss_asr"] = loss_asr.detach()
        if self.kd_weight > 0:
            require(self.kd_loss is not None and self.teacher is not None, "kd_weight>0 but no teacher is attached; "
                    "set --teacher_type and --teacher_path")
            teacher = self.teacher.to(speech.device)
            if needs_lattice(self.kd_loss):  # RNN-T soft targets: teacher and student lattices on the reference
                require(text is not None, "--kd_loss rnnt: needs transcripts (the lattice is over the reference); "
                        "pseudo-label unlabelled audio first (python -m kd_core.pseudo_label)")
                mine, target, u_len = self.lattice(encoder_out, encoder_out_lens, text, text_lengths)
                theirs = teacher.transducer_lattice(speech, speech_lengths, target, u_len)
                kd_sum, kd_den, kd_stats = self.kd_loss.lattice_kd(theirs, mine, target, u_len)
            else:
                hidden = self._student_hidden(got, encoder_out)
                with torch.no_grad():
                    t_out = teacher(speech, speech_lengths)
                logits = self.ctc.ctc_lo(encoder_out) if needs_logits(self.kd_loss) else None
                kd_sum, kd_den, kd_stats = kd_term_parts(self.kd_loss, t_out, hidden, encoder_out_lens, logits)
            # training under DDP: the global batch's frame mean (every rank runs every training step; evaluation
            # may run on rank 0 alone, e.g. ESPnet's attention plots, so it keeps the per-rank mean)
            loss_kd = global_batch_mean(kd_sum, kd_den, batch_size) if self.training else kd_sum / kd_den.clamp(min=1)
            loss = loss + self.kd_weight * loss_kd
            finite = not self.training or self._nonfinite.check(loss_kd.detach())
            if finite:
                stats["loss_kd"] = loss_kd.detach()
                stats.update({k: torch.tensor(v) for k, v in kd_stats.items()})
            if self.training:
                stats["kd_skipped"] = torch.tensor(float(not finite))
        stats["loss"] = loss.detach() if bool(torch.isfinite(loss.detach())) else None  # a skipped step: no average
        loss, stats, weight = force_gatherable((loss, stats, batch_size), loss.device)
        return loss, stats, weight

    def encode(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out, lens = super().encode(speech, speech_lengths)
        self._last_encode = (out[0] if isinstance(out, tuple) else out, lens)
        return out, lens

    def collect_feats(self, speech: torch.Tensor, speech_lengths: torch.Tensor, text: Optional[torch.Tensor] = None,
                      text_lengths: Optional[torch.Tensor] = None, **kwargs) -> Dict[str, torch.Tensor]:
        """As ESPnet's, but ``text`` is optional (unlabelled audio can be distilled)."""
        feats, feats_lengths = self._extract_feats(speech, speech_lengths)
        return {"feats": feats, "feats_lengths": feats_lengths}
