"""Corpus-derived training pairs (``mine.corpus_pairs``): a cheap signal that needs no generator.

- ``inverse_cloze`` (Lee et al. 2019, ICT): one sentence of a chunk is the query, the chunk without that
  sentence is the positive, so the pair cannot be matched by copying words of the query.
- ``spans``: a one- or two-sentence span of one chunk is the query, another chunk of the same document
  is the positive (two views of one document, as in Contriever's cropping, at chunk granularity).

Both return :class:`Pair` objects; the mine stage mines hard negatives for them like for any query.

Example::

    >>> text = "Cells divide. Mitosis has four phases in most eukaryotes. The spindle pulls chromatids apart."
    >>> [p.query for p in inverse_cloze([text], ["d1"], 5, seed=0)]
    ['Mitosis has four phases in most eukaryotes.']
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from trainer.chunking import split_sentences

MIN_QUERY_WORDS = 5  # shorter sentences ("Results are shown.") make poor queries
MAX_QUERY_WORDS = 48


@dataclass(frozen=True)
class Pair:
    query: str
    source: int  # index of the chunk the query was taken from
    positive: int  # index of the positive chunk (the source itself for inverse cloze)
    positive_text: str | None = None  # inverse cloze: the source chunk without the query sentence


def _sentences(text: str) -> list[str]:
    return [text[a:b].strip() for a, b in split_sentences(text) if text[a:b].strip()]


def _usable(sentence: str) -> bool:
    return MIN_QUERY_WORDS <= len(sentence.split()) <= MAX_QUERY_WORDS


def inverse_cloze(texts: Sequence[str], docs: Sequence[str], n: int, seed: int) -> list[Pair]:
    """Up to ``n`` pairs from distinct chunks (seeded): a usable sentence, and the rest of its chunk (>= 1 sentence)."""
    rng = random.Random(f"ict/{seed}")
    order = list(range(len(texts)))
    rng.shuffle(order)
    out: list[Pair] = []
    for i in order:
        if len(out) >= n:
            break
        sents = _sentences(texts[i])
        picks = [j for j, s in enumerate(sents) if _usable(s)]
        if len(sents) < 2 or not picks:
            continue
        j = rng.choice(picks)
        out.append(Pair(sents[j], i, i, " ".join(s for k, s in enumerate(sents) if k != j)))
    return out


def spans(texts: Sequence[str], docs: Sequence[str], n: int, seed: int) -> list[Pair]:
    """Up to ``n`` pairs (seeded): a usable one- or two-sentence span of a chunk, and another chunk of its document."""
    rng = random.Random(f"spans/{seed}")
    by_doc: dict[str, list[int]] = {}
    for i, d in enumerate(docs):
        by_doc.setdefault(d, []).append(i)
    order = [i for i in range(len(texts)) if len(by_doc[docs[i]]) >= 2]
    rng.shuffle(order)
    out: list[Pair] = []
    for i in order:
        if len(out) >= n:
            break
        sents = _sentences(texts[i])
        width = rng.choice((1, 2))
        starts = [j for j in range(len(sents) - width + 1) if _usable(" ".join(sents[j:j + width]))]
        if not starts:
            continue
        j = rng.choice(starts)
        other = rng.choice([c for c in by_doc[docs[i]] if c != i])
        out.append(Pair(" ".join(sents[j:j + width]), i, other))
    return out


MAKERS = {"inverse_cloze": inverse_cloze, "spans": spans}
