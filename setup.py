"""Distil self-supervised speech teachers into small streaming students, inside ESPnet and fairseq."""
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop

# Start-up hook that maps ``python -m espnet2.bin.asr_kd_{train,inference}`` to espnet_kd.bin (see
# espnet_kd/_aliases.py); it goes to site-packages itself, for both normal and editable installs.
PTH = os.path.join("espnet_kd", "espnet_kd_aliases.pth")


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, os.path.basename(PTH)))

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, os.path.basename(PTH))]


class DevelopWithPth(develop):
    def run(self):
        super().run()
        if not self.uninstall:
            self.copy_file(PTH, os.path.join(self.install_dir, os.path.basename(PTH)))

setup(
    name="espnet-fairseq-kd",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else __doc__,
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["kd_core", "kd_core.*", "espnet_kd", "espnet_kd.*", "fairseq_kd", "fairseq_kd.*"]),
    install_requires=["torch>=2.1", "torchaudio>=2.1", "numpy", "soundfile", "pyyaml", "tqdm"],
    extras_require={
        "espnet": ["espnet==202511", "espnet-model-zoo==0.1.7", "sentencepiece"],
        "fairseq": ["fairseq-fixed==0.12.3.1", "hydra-core==1.3.2", "omegaconf==2.3.0"],
        "test": ["pytest", "jiwer", "matplotlib"],
    },
    license="Apache-2.0",
    cmdclass={"build_py": BuildPyWithPth, "develop": DevelopWithPth},
)
