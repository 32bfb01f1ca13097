"""Tiny fairseq manifests (synthetic corpus) shared by the fairseq plugin tests."""
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fairseq_data(tmp_path_factory, tiny_teachers):
    """``{"letters": manifest dir (dictionary from the corpus), "ctc": same audio with the tiny
    wav2vec2-CTC teacher's dictionary (LF-MMI needs one token list), "corpus": corpus root}``."""
    from tools.make_corpus import make_synthetic_corpus

    root = tmp_path_factory.mktemp("fairseq_data")
    make_synthetic_corpus(root / "corpus", seed=5, num_train=12, num_valid=4, num_test=4, jobs=2)
    letters = root / "corpus" / "fairseq"
    ctc = root / "ctc"
    ctc.mkdir()
    for f in letters.iterdir():
        if f.suffix in (".tsv", ".ltr", ".wrd"):
            shutil.copy(f, ctc / f.name)
    shutil.copy(Path(tiny_teachers["fairseq_w2v2_ctc"]).parent / "fairseq_labels" / "dict.ltr.txt", ctc / "dict.ltr.txt")
    return {"letters": letters, "ctc": ctc, "corpus": root / "corpus"}
