"""Shared timing helper of the bench scripts (run them as ``python bench/<script>.py``)."""
import time


def best_time(fn, repeats: int) -> float:
    """Minimum wall time of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
