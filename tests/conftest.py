"""Shared fixtures: tiny real teachers written once per session with the toolkits' own code."""
import os
import tempfile
import zipfile
from pathlib import Path

import pytest


def _offline_nltk_data() -> str:
    """g2p_en (imported by espnet2.tasks.asr) downloads two NLTK packages at import unless
    ``nltk.data.find`` sees them (g2p_en/g2p.py); empty placeholders keep it quiet offline."""
    root = Path(tempfile.mkdtemp(prefix="nltk_data_"))
    for rel in ("taggers/averaged_perceptron_tagger_eng.zip", "corpora/cmudict.zip"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        zipfile.ZipFile(root / rel, "w").close()
    return str(root)


os.environ.setdefault("NLTK_DATA", _offline_nltk_data())


@pytest.fixture(scope="session")
def tiny_teachers(tmp_path_factory):
    """``{name: path}``: tiny fairseq HuBERT / wav2vec2 / wav2vec2-CTC checkpoints and an ESPnet zip."""
    from tools.make_tiny_teachers import make_tiny_teachers

    return make_tiny_teachers(tmp_path_factory.mktemp("teachers"), seed=0)


def pytest_collection_modifyitems(config, items):
    """Longest first: ``slow`` tests before the rest, ordered by their ``minutes`` hint (``@pytest.mark.slow(minutes=12)``,
    default 1). With ``-n 2 --dist worksteal`` (``make test``) one worker starts on the longest runs while the other
    works from the end of the queue, so the suite ends when its total work, not its longest chain, is done."""
    def cost(item):
        mark = item.get_closest_marker("slow")
        return 0.0 if mark is None else float(mark.kwargs.get("minutes", 1))

    items.sort(key=cost, reverse=True)  # stable: equal costs keep their collection order
