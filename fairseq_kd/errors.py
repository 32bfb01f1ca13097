"""Bad input at the fairseq plugin's training entry points ends the run with one line.

``fairseq-hydra-train`` prints a traceback for any exception (Hydra's ``run_and_report``);
:class:`~kd_core.errors.KDConfigError` raised while the task loads data or builds the model or
criterion is turned into ``SystemExit("fairseq_kd: error: <one line>")`` instead, which Hydra and
fairseq pass through, so the last line of the log names the option/file and the fix.

Use it as ``with one_line_errors(): ...`` or as a decorator. Methods whose signature fairseq
inspects with ``inspect.getfullargspec`` (``task.build_model``'s ``from_checkpoint``) must use the
``with`` form: that function does not see through decorators.
"""
from contextlib import contextmanager

from kd_core.errors import KDConfigError


@contextmanager
def one_line_errors():
    """``KDConfigError`` -> ``SystemExit`` carrying its one line."""
    try:
        yield
    except KDConfigError as e:
        raise SystemExit(f"fairseq_kd: error: {e}") from None
