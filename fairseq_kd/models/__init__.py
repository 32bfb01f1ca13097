"""Models of the fairseq plugin (``kd_hubert_ctc`` is registered by kd_core's fairseq compat module)."""
from kd_core.teachers import fairseq_compat  # noqa: F401  (kd_hubert_ctc)

from . import kd_student  # noqa: F401
