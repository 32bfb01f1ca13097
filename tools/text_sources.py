"""Licence-clean sentence sources for the synthetic corpus.

``wordnet_sentences``: the example sentences of WordNet 3.0 (Debian package ``wordnet-base``,
``/usr/share/wordnet/data.*``), about 45k after filtering. WordNet licence notice, which must
accompany copies of the data: "WordNet 3.0 Copyright 2006 by Princeton University. All rights
reserved." (full text: /usr/share/doc/wordnet-base/copyright). The corpus generator writes this
notice next to any corpus built from it.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from typing import Dict, List

WORDNET_DIR = "/usr/share/wordnet"
WORDNET_NOTICE = ("Sentences from WordNet 3.0 example glosses. WordNet 3.0 Copyright 2006 by Princeton University. "
                  "All rights reserved. Licence: /usr/share/doc/wordnet-base/copyright (WordNet 3.0 licence).")
_QUOTE = re.compile(r'"([^"]+)"')
_ALLOWED = re.compile(r"^[A-Z' ]+$")


def normalise(text: str) -> str:
    """Upper-case, keep letters/apostrophes/spaces, collapse whitespace ('' if anything else remains)."""
    text = re.sub(r"[,;:.!?-]", " ", text.upper())
    text = " ".join(text.split())
    return text if _ALLOWED.match(text) else ""


def wordnet_sentences(min_words: int = 3, max_words: int = 12, wordnet_dir: str = WORDNET_DIR) -> List[str]:
    """Sorted, de-duplicated normalised example sentences of ``min_words..max_words`` words."""
    from kd_core.errors import require

    files = [os.path.join(wordnet_dir, f"data.{pos}") for pos in ("noun", "verb", "adj", "adv")]
    require(all(os.path.isfile(f) for f in files),
            f"text_source=wordnet: {wordnet_dir}/data.* not found; install Debian's wordnet-base (tools/install.sh does)")
    out = set()
    for path in files:
        with open(path, encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):  # licence header
                    continue
                for m in _QUOTE.finditer(line.partition("|")[2]):
                    s = normalise(m.group(1))
                    if s and min_words <= len(s.split()) <= max_words:
                        out.add(s)
    return sorted(out)


#: sentences held out of every training list of a closed-vocabulary corpus (valid, test), whatever its seed
HELD_OUT = {"test": 400, "valid": 300}


def wordnet_closed_vocab(vocab_size: int, wordnet_dir: str = WORDNET_DIR) -> Dict[str, List[str]]:
    """Sentences whose words are all among the ``vocab_size`` most frequent words of WordNet's examples,
    split into disjoint ``test`` / ``valid`` / ``train`` lists (sizes :data:`HELD_OUT`, rest train).

    The split orders sentences by a hash of their text, so it does not depend on any seed: corpora made
    with different seeds (a labelled set, an unlabelled pool) share the same held-out sentences.
    """
    from kd_core.errors import require

    require(isinstance(vocab_size, int) and vocab_size >= 100, f"vocab_size={vocab_size}: use an integer >= 100")
    allsent = wordnet_sentences(wordnet_dir=wordnet_dir)
    counts = Counter(w for s in allsent for w in s.split())
    vocab = {w for w, _ in sorted(counts.items(), key=lambda x: (-x[1], x[0]))[:vocab_size]}
    closed = sorted((s for s in allsent if all(w in vocab for w in s.split())),
                    key=lambda s: hashlib.sha1(s.encode()).hexdigest())
    n_test, n_valid = HELD_OUT["test"], HELD_OUT["valid"]
    require(len(closed) > 2 * (n_test + n_valid), f"vocab_size={vocab_size}: only {len(closed)} sentences; use a larger vocabulary")
    return {"test": sorted(closed[:n_test]), "valid": sorted(closed[n_test:n_test + n_valid]),
            "train": sorted(closed[n_test + n_valid:])}


def wordnet_pool(vocab_size: int, wordnet_dir: str = WORDNET_DIR) -> List[str]:
    """Every WordNet example sentence except the held-out ``valid``/``test`` sentences of
    :func:`wordnet_closed_vocab` (``vocab_size``): texts of an unlabelled pre-training pool."""
    held = wordnet_closed_vocab(vocab_size, wordnet_dir)
    out = set(held["test"]) | set(held["valid"])
    return [s for s in wordnet_sentences(wordnet_dir=wordnet_dir) if s not in out]
