"""Streaming transducer (RNN-T) student: the core's front-end + chunked encoder, a stateless prediction network and
a joiner; ``torchaudio.functional.rnnt_loss``; greedy decoding, offline or chunk by chunk with the same output.

Prediction network: stateless (Ghodsi et al. 2020, icefall's ``Decoder``): the embeddings of the last ``context``
emitted tokens (blank = start symbol) through a causal 1-D convolution of width ``context`` and a ReLU. Its state is
just those ``context`` token ids, so streaming needs no recurrent state and greedy search needs no cache.

Greedy search is frame-synchronous: at each encoder frame ``t`` emit ``argmax joint(enc_t, pred)`` until blank (at
most ``max_symbols`` per frame). A frame's decisions depend only on frames ``<= t`` of its own utterance, so decoding
a batch equals decoding each utterance alone, and decoding chunk by chunk (carrying :class:`GreedyState`) equals
decoding the whole encoder output, which the chunked encoder computes identically when streaming.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import require
from .model import StreamingStudent, StudentOutput, stream_steps


class StatelessPredictor(nn.Module):
    """Embedding of the last ``context`` tokens -> causal Conv1d (width ``context``) -> ReLU.

    Shapes: ``forward(tokens (B, U))`` -> ``(B, U + 1, dim)``: the output after the start symbol and after each of
    the ``U`` tokens (the lattice rows of the loss); ``step(history (B, context))`` -> ``(B, dim)``.
    """

    def __init__(self, vocab_size: int, dim: int, blank: int = 0, context: int = 2):
        super().__init__()
        require(context >= 1, f"transducer: context={context}: need at least 1 token of history")
        self.blank, self.context = int(blank), int(context)
        self.embed = nn.Embedding(vocab_size, dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size=context, groups=dim // 4 if dim % 4 == 0 else 1, bias=False)

    def _conv(self, emb: torch.Tensor) -> torch.Tensor:
        """``emb (B, N + context - 1, dim)`` -> ``(B, N, dim)``."""
        return F.relu(self.conv(emb.transpose(1, 2)).transpose(1, 2))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b = tokens.size(0)
        start = tokens.new_full((b, self.context), self.blank)  # start symbol + left padding of blanks
        return self._conv(self.embed(torch.cat([start, tokens.long()], dim=1)))

    def step(self, history: torch.Tensor) -> torch.Tensor:
        return self._conv(self.embed(history.long()))[:, -1]

    def initial_history(self, batch: int, device=None) -> torch.Tensor:
        return torch.full((batch, self.context), self.blank, dtype=torch.long, device=device)


class Joiner(nn.Module):
    """``logits = out(tanh(enc_proj(enc) + pred_proj(pred)))``; broadcasting ``enc (..., H_enc)`` with ``pred (..., H_pred)``
    (the loss passes ``(B, T, 1, H)`` and ``(B, 1, U + 1, H)`` -> ``(B, T, U + 1, V)``)."""

    def __init__(self, enc_dim: int, pred_dim: int, joint_dim: int, vocab_size: int):
        super().__init__()
        self.enc_proj, self.pred_proj = nn.Linear(enc_dim, joint_dim), nn.Linear(pred_dim, joint_dim)
        self.out = nn.Linear(joint_dim, vocab_size)

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.enc_proj(enc) + self.pred_proj(pred)))


def rnnt_loss_sum(joint: nn.Module, enc: torch.Tensor, enc_lengths: torch.Tensor, pred: torch.Tensor,
                  targets: torch.Tensor, target_lengths: torch.Tensor,
                  blank: int = 0) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
    """Transducer loss summed over utterances: ``enc (B, T, H)``, ``pred (B, U + 1, H')``, ``targets (B, U)`` ->
    ``(sum, B, stats)`` (``torchaudio.functional.rnnt_loss`` on the full ``(B, T, U + 1, V)`` joint, fp32; torchaudio
    2.9's has no FastEmit option)."""
    from torchaudio.functional import rnnt_loss

    t, u = int(enc_lengths.max()), int(target_lengths.max())  # torchaudio wants the padding trimmed to the longest
    enc, pred, targets = enc[:, :t], pred[:, :u + 1], targets[:, :u]
    logits = joint(enc[:, :, None], pred[:, None]).float()
    loss = rnnt_loss(logits, targets.int(), enc_lengths.int(), target_lengths.int(), blank=blank, reduction="sum")
    den = torch.tensor(float(enc.size(0)))
    return loss, den, {"rnnt": float(loss.detach() / den)}


@dataclass
class GreedyState:
    """Greedy search state of ``B`` utterances: the predictor's token history ``(B, context)``, its output
    ``(B, H)`` and the tokens emitted so far."""

    history: torch.Tensor
    pred: torch.Tensor
    hyps: List[List[int]] = field(default_factory=list)


class TransducerStudent(nn.Module):
    """:class:`StreamingStudent` (front-end + chunked encoder, optional CTC head) + stateless predictor + joiner.

    Args:
        vocab_size: outputs of the joiner (blank included); blank: its id (the CTC blank of the core, 0).
        pred_dim / joint_dim: widths of the prediction network and the joiner (default: the encoder's).
        context: tokens of history of the stateless predictor.
        ctc_head: also build a CTC head on the encoder (``vocab_size`` outputs) for a CTC auxiliary loss.
        **student_conf: :class:`StreamingStudent` arguments (``frontend``, ``d_model``, ``num_layers``, ``chunk_size``, ...).
    Shapes:
        ``forward(wav (B, S), lengths (B,))`` -> :class:`StudentOutput` (``logits``: the CTC head's or ``None``);
        ``predict(targets (B, U))`` -> ``(B, U + 1, pred_dim)``; ``loss`` / ``greedy``: see their docstrings.
    """

    def __init__(self, vocab_size: int, blank: int = 0, pred_dim: Optional[int] = None, joint_dim: Optional[int] = None,
                 context: int = 2, ctc_head: bool = False, **student_conf):
        super().__init__()
        self.body = StreamingStudent(vocab_size=vocab_size if ctc_head else 0, **student_conf)
        d = self.body.encoder.d_model
        self.blank, self.vocab_size = int(blank), int(vocab_size)
        self.predictor = StatelessPredictor(vocab_size, pred_dim or d, blank, context)
        self.joiner = Joiner(d, pred_dim or d, joint_dim or d, vocab_size)

    # the StreamingStudent interface (teachers, KD objective, latency helpers read these)
    @property
    def frontend(self):
        return self.body.frontend

    @property
    def encoder(self):
        return self.body.encoder

    @property
    def ctc(self):
        return self.body.ctc

    @property
    def sample_rate(self) -> int:
        return self.body.sample_rate

    @property
    def frame_shift_ms(self) -> float:
        return self.body.frame_shift_ms

    @property
    def frontend_lookahead_ms(self) -> float:
        return self.body.frontend_lookahead_ms

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor, chunk_size: Optional[int] = None) -> StudentOutput:
        return self.body(wav, lengths, chunk_size)

    @torch.no_grad()
    def stream(self, pieces, max_symbols: int = 3) -> GreedyState:
        """Decode a waveform given as successive ``(1, n)`` pieces of any size: encoder chunk by chunk, greedy search
        carried across chunks; the hypothesis equals :meth:`greedy` on the full forward."""
        state = self.greedy_state(1)
        for hidden in self.body_stream_steps(pieces):
            state = self.greedy(hidden[-1], state=state, max_symbols=max_symbols)
        return state

    def body_stream_steps(self, pieces):
        """:func:`~kd_core.students.model.stream_steps` of the front-end + encoder: per waveform piece, the hidden
        states ``(1, t, D)`` that became ready; feed ``[-1]`` to :meth:`greedy` with the carried state."""
        return stream_steps(self.frontend, self.encoder, pieces)

    def predict(self, targets: torch.Tensor) -> torch.Tensor:
        return self.predictor(targets)

    def loss(self, enc: torch.Tensor, enc_lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor):
        """:func:`rnnt_loss_sum` of this model's joiner on ``enc (B, T, D)`` (the last hidden state)."""
        return rnnt_loss_sum(self.joiner, enc, enc_lengths, self.predict(targets), targets, target_lengths, self.blank)

    def greedy_state(self, batch: int = 1) -> GreedyState:
        hist = self.predictor.initial_history(batch, self.joiner.out.weight.device)
        return GreedyState(hist, self.predictor.step(hist), [[] for _ in range(batch)])

    @torch.no_grad()
    def greedy(self, enc: torch.Tensor, lengths: Optional[torch.Tensor] = None, state: Optional[GreedyState] = None,
               max_symbols: int = 3) -> GreedyState:
        """Frame-synchronous greedy search over ``enc (B, T, D)`` (``lengths``: valid frames; default all), from
        ``state`` (a new search by default; pass the returned state with the next chunk to stream)."""
        b, t_max, _ = enc.shape
        state = state or self.greedy_state(b)
        lengths = torch.full((b,), t_max) if lengths is None else lengths
        hist, pred = state.history, state.pred
        for t in range(t_max):
            active = t < lengths
            for _ in range(max_symbols):
                k = self.joiner(enc[:, t], pred).argmax(-1)
                emit = active & (k != self.blank)
                if not bool(emit.any()):
                    break
                for i in emit.nonzero().flatten().tolist():
                    state.hyps[i].append(int(k[i]))
                hist = torch.where(emit[:, None], torch.cat([hist[:, 1:], k[:, None]], dim=1), hist)
                pred = torch.where(emit[:, None], self.predictor.step(hist), pred)
                active = emit
        state.history, state.pred = hist, pred
        return state


def is_transducer(model) -> bool:
    """Whether ``model`` is a :class:`TransducerStudent` (or one wrapped the same way): its prediction layer is the
    joiner, it decodes with :meth:`TransducerStudent.greedy` and has no CTC logits to read."""
    return isinstance(model, TransducerStudent)


def transducer_student(vocab_size: int, **conf) -> TransducerStudent:
    """Factory: ``transducer_student(30, frontend="fbank", d_model=144, num_layers=6, chunk_size=12)``."""
    return TransducerStudent(vocab_size, **conf)
