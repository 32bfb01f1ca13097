"""Shared fixtures: tiny real teachers written once per session with the toolkits' own code."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NLTK_DATA", str(ROOT / ".venv" / "nltk_data"))
sys.path.insert(0, str(ROOT / "tools"))


@pytest.fixture(scope="session")
def tiny_teachers(tmp_path_factory):
    """``{name: path}`` of the tiny fairseq HuBERT / wav2vec2 / wav2vec2-CTC checkpoints and ESPnet zip."""
    from make_tiny_teachers import make_tiny_teachers

    return make_tiny_teachers(tmp_path_factory.mktemp("teachers"), seed=0)


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("zoo"))
