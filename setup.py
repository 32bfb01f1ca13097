"""Distil self-supervised speech teachers into small streaming students, inside ESPnet and fairseq."""
import os

from setuptools import find_packages, setup

# Built through pyproject.toml (PEP 517/660): pep517/kd_backend.py adds the start-up hook
# espnet_kd/espnet_kd_aliases.pth, which maps ``python -m espnet2.bin.asr_kd_{train,inference}`` to
# espnet_kd.bin (see espnet_kd/_aliases.py), to every wheel, regular and editable.

setup(
    name="espnet-fairseq-kd",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read() if os.path.exists("README.md") else __doc__,
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["kd_core", "kd_core.*", "espnet_kd", "espnet_kd.*", "fairseq_kd", "fairseq_kd.*"]),
    install_requires=["torch>=2.1", "torchaudio>=2.1", "numpy", "soundfile", "pyyaml", "tqdm"],
    extras_require={
        "espnet": ["espnet==202511", "espnet-model-zoo==0.1.7", "sentencepiece"],
        "fairseq": ["fairseq-fixed==0.12.3.1", "hydra-core==1.3.2", "omegaconf==2.3.0"],
        "deploy": ["onnx==1.23.2", "onnxruntime==1.32.0", "sherpa-onnx==2.0.1"],
        "test": ["pytest", "pytest-xdist", "jiwer", "matplotlib"],
    },
    license="Apache-2.0",
)
