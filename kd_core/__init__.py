"""Toolkit-neutral core of espnet-fairseq-kd: pure torch students, teachers, streaming masks, KD losses.

Importing this package never imports ESPnet or fairseq; loaders import them when called.
"""

__version__ = "0.1.0"
