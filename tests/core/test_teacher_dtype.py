"""Teachers under ``torch.inference_mode()`` computing in bfloat16 (``load_teacher(..., compute_dtype=...)``): targets stay
float32, usable in a loss's autograd graph, within a stated tolerance of the float32 targets, and the dtype is part
of a target cache's identity."""
import math

import pytest
import torch

from kd_core.cache.keys import teacher_fingerprint
from kd_core.errors import KDConfigError
from kd_core.teachers import load_teacher

#: the tiny teachers are at most 16 layers deep (tests/float_noise.py); a bf16 product rounds to eps = 2^-7 of
#: its value and independent roundings add up like a random walk over the depth, so every layer's relative
#: (Frobenius) error stays below 2 * eps * sqrt(16) = 6.25 %. A wrong layer or frame is off by ~100 %.
BF16_REL_TOL = 2 * torch.finfo(torch.bfloat16).eps * math.sqrt(16)


def _audio():
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(2, 16000, generator=g) * 0.1
    lens = torch.tensor([16000, 12000])
    wav[1, 12000:] = 0
    return wav, lens


@pytest.mark.parametrize("kind,name", [("fairseq", "fairseq_hubert"), ("fairseq", "fairseq_w2v2_ctc"), ("espnet", "espnet")])
def test_bfloat16_targets_within_tolerance_of_float32(tiny_teachers, kind, name):
    wav, lens = _audio()
    ref = load_teacher(kind, str(tiny_teachers[name]))(wav, lens)
    got = load_teacher(kind, str(tiny_teachers[name]), compute_dtype="bfloat16")(wav, lens)
    assert torch.equal(got.lengths, ref.lengths)
    pairs = list(zip(got.hidden, ref.hidden)) + ([(got.logits, ref.logits)] if ref.logits is not None else [])
    for k, (g, r) in enumerate(pairs):
        assert g.dtype == torch.float32 and not g.is_inference()
        valid = torch.arange(r.size(1))[None] < ref.lengths[:, None]
        rel = float((g - r)[valid].norm() / r[valid].norm())
        assert rel < BF16_REL_TOL, f"layer {k}: bf16 relative error {rel:.3f} > {BF16_REL_TOL:.4f}"
        assert rel > 1e-4, f"layer {k}: bf16 targets equal the float32 ones ({rel:.1e}); autocast did not apply"


def test_targets_enter_a_loss_graph_and_float32_is_the_default(tiny_teachers):
    """Outputs of the inference-mode teacher are ordinary tensors: a loss reading them back-propagates."""
    wav, lens = _audio()
    path = str(tiny_teachers["fairseq_hubert"])
    teacher = load_teacher("fairseq", path)
    out = teacher(wav, lens)
    pred = torch.zeros_like(out.hidden[-1], requires_grad=True)
    torch.nn.functional.mse_loss(pred, out.hidden[-1]).backward()
    torch.testing.assert_close(pred.grad, -2 * out.hidden[-1] / out.hidden[-1].numel())
    again = load_teacher("fairseq", path, compute_dtype="float32")(wav, lens)
    assert all(torch.equal(a, b) for a, b in zip(again.hidden, out.hidden))


def test_dtype_is_part_of_the_cache_identity(tiny_teachers):
    path = str(tiny_teachers["fairseq_hubert"])
    assert teacher_fingerprint("fairseq", path, compute_dtype="float32") == teacher_fingerprint("fairseq", path)
    assert teacher_fingerprint("fairseq", path, compute_dtype="bfloat16") != teacher_fingerprint("fairseq", path)


def test_unknown_dtype_is_one_line(tiny_teachers):
    with pytest.raises(KDConfigError, match=r"^teacher compute_dtype='int8': unknown teacher dtype; choose one of float32, bfloat16, float16$"):
        load_teacher("fairseq", str(tiny_teachers["fairseq_hubert"]), compute_dtype="int8")
