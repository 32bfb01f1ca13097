"""ESPnet adapter: the ``asr_kd`` task (``python -m espnet2.bin.asr_kd_train``), streaming
front-end/encoder wrappers around :mod:`kd_core`, the KD model and student export.

Importing this package is cheap (no torch, no ESPnet); submodules import ESPnet.
"""
