"""KD criteria of the fairseq plugin."""
from . import kd  # noqa: F401
