"""``python -m kd_core.cache build|status`` (see :mod:`kd_core.cache.cli`)."""
import sys

from .cli import main

sys.exit(main())
