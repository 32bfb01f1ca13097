"""``python -m kd_core.cache build|status`` (see :mod:`kd_core.cache.build`)."""
import sys

from .build import main

sys.exit(main())
