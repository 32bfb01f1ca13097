"""Deployment: the streaming student as a WeNet-style ONNX model for sherpa-onnx (:mod:`.wenet_onnx`), and the
runtimes that run it (:mod:`.runtime`). The command line is ``python -m kd_core.export_onnx``."""
