"""Tasks of the fairseq plugin."""
from . import kd_audio  # noqa: F401
