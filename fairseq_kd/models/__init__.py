"""Models of the fairseq plugin."""
from . import kd_student  # noqa: F401
