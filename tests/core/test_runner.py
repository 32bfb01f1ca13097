"""kd_core.runner.train_loop: the one pure-torch training loop (the bench's), resumable mid-training."""
import itertools
import math

import pytest
import torch
from torch import nn

from kd_core.errors import KDConfigError
from kd_core.runner import lr_factor, train_loop

X = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0]) + 0.1


def _model():
    torch.manual_seed(0)
    return nn.Linear(5, 1)


def _batches():
    return itertools.cycle([list(range(i, i + 8)) for i in range(0, 64, 8)])


def _step(model, fail_at=None, seen=None):
    def step(idx):
        if seen is not None:
            seen.append(idx[0])
            if fail_at is not None and len(seen) == fail_at:
                raise KeyboardInterrupt  # a killed run, after the checkpoint of the previous step
        loss = (model(X[idx]).squeeze(-1) - Y[idx]).pow(2).mean()
        return loss, {"mse": loss.item()}
    return step


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path):
    ref = _model()
    info_ref = train_loop(ref, _step(ref), _batches(), lr=0.05, warmup=3, ckpt=tmp_path / "ref.pt", steps=20)
    assert info_ref["steps"] == 20 and len(info_ref["curve"]) == 20
    assert info_ref["curve"][-1]["mse"] < 0.5 * info_ref["curve"][0]["mse"]  # it trains

    m, seen = _model(), []
    with pytest.raises(KeyboardInterrupt):
        train_loop(m, _step(m, fail_at=12, seen=seen), _batches(), lr=0.05, warmup=3, ckpt=tmp_path / "run.pt", steps=20,
                   ckpt_every_s=0)  # checkpoint after every step
    assert (tmp_path / "run.pt").exists() and torch.load(tmp_path / "run.pt", weights_only=False)["state"]["step"] == 11
    m2, seen2 = _model(), []
    info = train_loop(m2, _step(m2, seen=seen2), _batches(), lr=0.05, warmup=3, ckpt=tmp_path / "run.pt", steps=20)
    assert info["steps"] == 20 and len(seen2) == 9  # only the remaining steps ran ...
    assert seen2[0] == seen[11]  # ... on the batches the killed run had not finished (order replayed)
    assert [c["mse"] for c in info["curve"]] == [c["mse"] for c in info_ref["curve"]]
    for a, b in zip(m2.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)


def test_budget_and_non_finite_steps(tmp_path):
    m = _model()
    info = train_loop(m, _step(m), _batches(), lr=0.05, warmup=1, ckpt=tmp_path / "b.pt", budget_s=0.0, steps=100)
    assert info["steps"] == 0  # the wall-clock budget stops before the step budget
    before = [p.detach().clone() for p in m.parameters()]
    nan_step = lambda idx: (m(X[idx]).sum() * float("nan"), {"x": 0.0})  # noqa: E731
    info = train_loop(m, nan_step, _batches(), lr=0.05, warmup=1, ckpt=tmp_path / "n.pt", steps=3)
    assert info["steps"] == 3 and all(torch.equal(a, b) for a, b in zip(before, m.parameters()))  # skipped, counted
    with pytest.raises(KDConfigError, match="give steps or budget_s"):
        train_loop(m, nan_step, _batches(), lr=0.05, warmup=1, ckpt=tmp_path / "x.pt")


def test_lr_schedule():
    assert lr_factor(0, 10, 0.0) == pytest.approx(0.1)  # warm-up
    assert lr_factor(9, 10, 0.0) == pytest.approx(1.0)
    assert lr_factor(50, 10, 0.5) == pytest.approx(0.5)  # cosine half-way
    assert lr_factor(99, 10, 1.0) == pytest.approx(0.02) and lr_factor(99, 10, 2.0) == pytest.approx(0.02)  # floor
    assert math.isclose(lr_factor(0, 0, 0.0), 1.0)
