"""Repository tools (not installed): run from the repo root, e.g. ``python -m tools.make_tiny_teachers``;
the bench and the tests import them as ``tools.<module>``."""
