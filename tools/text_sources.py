"""Licence-clean sentence sources for the synthetic corpus.

``wordnet_sentences``: the example sentences of WordNet 3.0 (Debian package ``wordnet-base``,
``/usr/share/wordnet/data.*``), about 45k after filtering. WordNet licence notice, which must
accompany copies of the data: "WordNet 3.0 Copyright 2006 by Princeton University. All rights
reserved." (full text: /usr/share/doc/wordnet-base/copyright). The corpus generator writes this
notice next to any corpus built from it.
"""
from __future__ import annotations

import os
import re
from typing import List

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
