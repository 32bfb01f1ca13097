"""One exception type for bad input, so every front-end (ESPnet, fairseq, tools) prints one line.

Messages name the offending file or option and say what to do, e.g.::

    KDConfigError("teacher_path=/x/y.pt: file not found; pass an existing fairseq checkpoint")
"""


class KDConfigError(ValueError):
    """Bad configuration or input. ``str(err)`` is a single line naming the option/file and the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def require(cond: bool, message: str) -> None:
    """Raise :class:`KDConfigError` with ``message`` unless ``cond`` holds."""
    if not cond:
        raise KDConfigError(message)


def write_error(err: OSError, what: str = "output") -> KDConfigError:
    """A failed write (unwritable or missing folder, full disk) as one line naming the path and the fix."""
    where = err.filename or "?"
    return KDConfigError(f"{where}: cannot write the {what} ({err.strerror or err}); choose a writable folder with free space")
