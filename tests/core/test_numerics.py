"""NonFiniteGuard: non-finite KD terms are counted, finite ones reset the run, too many in a row stop with one line."""
import math

import pytest
import torch

from kd_core.errors import KDConfigError
from kd_core.numerics import NonFiniteGuard, NonFiniteKDError


def test_counts_resets_and_stops_after_max_consecutive():
    guard = NonFiniteGuard(max_consecutive=3, option="opt")
    seq = [1.0, math.nan, math.inf, 2.0, -math.inf, math.nan]
    assert [guard.check(torch.tensor(v)) for v in seq] == [True, False, False, True, False, False]
    assert (guard.skipped, guard.consecutive) == (4, 2)
    with pytest.raises(NonFiniteKDError, match=r"^opt=3: 3 training steps in a row had a non-finite KD term \(nan\);") as err:
        guard.check(torch.tensor(math.nan))
    assert isinstance(err.value, KDConfigError) and "\n" not in str(err.value)


def test_zero_never_stops():
    guard = NonFiniteGuard(max_consecutive=0)
    assert not any(guard.check(torch.tensor(math.nan)) for _ in range(100))
    assert guard.skipped == guard.consecutive == 100
