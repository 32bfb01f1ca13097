"""Auxiliary non-streaming branches + APC: full context in the branch, future targets, masking, ablations."""
import pytest
import torch

from kd_core.errors import KDConfigError
from kd_core.losses.aux_apc import AuxAPCKDLoss
from kd_core.students.encoder import ChunkedEncoder


def _enc(**kw):
    torch.manual_seed(0)
    conf = dict(d_model=16, num_layers=2, num_heads=2, ffn_dim=32, conv_kernel=3, dropout=0.0, chunk_size=2)
    conf.update(kw)
    return ChunkedEncoder(8, **conf).eval()


def _teacher(b=2, t=12, layers=4, d=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, t, d, generator=g) for _ in range(layers + 1)]


def test_aux_branch_sees_future_context_the_streaming_layer_does_not():
    enc = _enc()
    loss = AuxAPCKDLoss(enc, teacher_dim=6, teacher_layers=4, layer_map="2:1", use_apc=False).eval()
    x = torch.randn(1, 6, 8)
    hidden, _ = enc(x, torch.tensor([6]))
    valid = torch.ones(1, 6, dtype=torch.bool)
    full = torch.ones(1, 6, 6, dtype=torch.bool)
    out = loss.aux_layers[0](hidden[0], valid, full)[0]
    x2 = x.clone()
    x2[:, 5] += 3.0  # change only the last frame
    hidden2, _ = enc(x2, torch.tensor([6]))
    out2 = loss.aux_layers[0](hidden2[0], valid, full)[0]
    assert not torch.allclose(out[:, 0], out2[:, 0])  # aux frame 0 sees frame 5 (full context) ...
    assert torch.allclose(hidden[1][:, 0], hidden2[1][:, 0])  # ... the streaming layer's frame 0 does not


def test_loss_padding_invariant_and_batch_is_sum():
    enc = _enc()
    loss = AuxAPCKDLoss(enc, teacher_dim=6, teacher_layers=4, layer_map="2:1,4:2", apc_shift=2)
    th = _teacher(t=12)
    s_in = torch.randn(2, 6, 8)
    s_len = torch.tensor([6, 4])
    hs, _ = enc(s_in, s_len)
    total, denom, stats = loss(th, torch.tensor([12, 8]), hs, s_len)
    parts = []
    for i in range(2):
        h1, _ = enc(s_in[i : i + 1, : s_len[i]], s_len[i : i + 1])
        parts.append(loss([h[i : i + 1, : 2 * s_len[i]] for h in th], torch.tensor([2 * s_len[i]]), h1, s_len[i : i + 1])[0])
    assert int(denom) == 10 and torch.allclose(total, parts[0] + parts[1], atol=1e-5)
    assert {"aux_l1_t2s1", "apc_cos_t4s2"} <= set(stats)


def test_apc_predicts_k_frames_ahead():
    """With an identity-like setup the APC loss is minimal exactly when the target is the k-th next frame."""
    enc = _enc()
    loss = AuxAPCKDLoss(enc, teacher_dim=16, teacher_layers=1, layer_map="1:1", use_aux=False, apc_shift=2,
                        teacher_shift_ms=40, student_shift_ms=40, cos_weight=0.0)
    with torch.no_grad():
        loss.apc_heads[0].weight.copy_(torch.eye(16))
        loss.apc_heads[0].bias.zero_()
    h = torch.randn(1, 10, 16)
    lens = torch.tensor([10])
    shifted = [h, torch.roll(h, 2, dims=1)]  # teacher layer 1 at t+2 == student layer 1 at t
    assert loss(shifted, lens, [h, h], lens)[0].item() == pytest.approx(0.0, abs=1e-6)
    assert loss([h, h], lens, [h, h], lens)[0].item() > 0.1


def test_shared_weights_add_no_layers_and_switches():
    enc = _enc()
    shared = AuxAPCKDLoss(enc, teacher_dim=6, teacher_layers=4, layer_map="4:2", share_weights=True)
    own = AuxAPCKDLoss(enc, teacher_dim=6, teacher_layers=4, layer_map="4:2")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(own) - n(shared) == sum(p.numel() for p in enc.layers[1].parameters())
    assert not any(p is q for p in shared.parameters() for q in enc.parameters())  # encoder not owned
    with pytest.raises(KDConfigError, match="enable at least one"):
        AuxAPCKDLoss(enc, 6, 4, "4:2", use_aux=False, use_apc=False)
    with pytest.raises(KDConfigError, match="start at 1"):
        AuxAPCKDLoss(enc, 6, 4, "4:0")


def test_target_norm_normalises_aux_and_apc_targets():
    enc = _enc()
    th = _teacher(t=12)
    hs, _ = enc(torch.randn(2, 6, 8), torch.tensor([6, 4]))
    args = (torch.tensor([12, 8]), hs, torch.tensor([6, 4]))
    normed = AuxAPCKDLoss(enc, teacher_dim=6, teacher_layers=4, layer_map="2:1,4:2", target_norm=True).eval()
    a = normed(th, *args)[0]
    assert torch.allclose(a, normed([x * 50 - 2 for x in th], *args)[0], atol=1e-4)
    raw = AuxAPCKDLoss(enc, teacher_dim=6, teacher_layers=4, layer_map="2:1,4:2").eval()
    raw.load_state_dict(normed.state_dict())
    assert not torch.allclose(raw(th, *args)[0], raw([x * 50 - 2 for x in th], *args)[0])
