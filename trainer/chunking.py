"""Sentence-aware chunking within a model's token limit, keeping character offsets.

Every chunk is an exact slice ``text[start:end]`` of its document, so offsets can be checked and a
chunk traced back to its source. Groups of ``sentences`` sentences are packed while they fit the
token budget; a sentence longer than the budget is cut at token boundaries.

Example::

    >>> from transformers import AutoTokenizer
    >>> from trainer.models import resolve_model
    >>> tok = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2", offline=True))
    >>> chunker = Chunker(tok, max_tokens=32, sentences=2)
    >>> text = "Aspirin inhibits COX-1. It lowers fever. Dr. Smith et al. disagree. Why?"
    >>> [c.text for c in chunker.chunk(text)]
    ['Aspirin inhibits COX-1. It lowers fever.', 'Dr. Smith et al. disagree. Why?']
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ABBREVIATIONS = {
    "e.g", "i.e", "etc", "dr", "mr", "mrs", "ms", "prof", "fig", "figs", "al", "vs", "no", "nos",
    "vol", "pp", "inc", "ltd", "co", "corp", "st", "jr", "sr", "cf", "approx", "eq", "eqs", "sec",
    "art", "v", "ref", "refs", "ch", "para", "u.s", "u.k", "jan", "feb", "mar", "apr", "jun", "jul",
    "aug", "sep", "sept", "oct", "nov", "dec", "resp", "ca", "est", "min", "max", "viz",
}
_CANDIDATE = re.compile(
    r"(?P<punct>[.!?]+[\"')\]]*)\s+(?=[\"'(\[]?[A-Z0-9])"  # end of sentence, then a capital or digit
    r"|(?P<para>\n[ \t]*\n\s*)"  # blank line: paragraph break
    r"|(?P<line>\n)(?=[ \t]*(?:#{1,6}\s|[-*+]\s|\d+[.)]\s|```))"  # newline before heading/list/fence
)
_FENCE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")


def _is_abbreviation(text: str, dot_pos: int) -> bool:
    m = _WORD_BEFORE.search(text, max(0, dot_pos - 20), dot_pos)
    if not m:
        return False
    word = m.group(1).lower().rstrip(".")
    return word in _ABBREVIATIONS or len(word) == 1  # single letters: initials, "p. 3"


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans (start, end), stripped of surrounding whitespace, in document order."""
    fences = [(m.start(), m.end()) for m in _FENCE.finditer(text)]
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _CANDIDATE.finditer(text):
        if any(a < m.start() < b for a, b in fences):
            continue
        if m.group("punct"):
            punct = m.group("punct")
            if punct.startswith(".") and len(punct.rstrip("\"')]")) == 1 and _is_abbreviation(text, m.start()):
                continue
            end = m.start() + len(punct)
        else:
            end = m.start()
        spans.append((start, end))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            out.append((a, b))
    return out


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int
    end: int
    n_tokens: int
    n_sentences: int


class Chunker:
    """Pack sentences into chunks of at most ``sentences`` sentences and ``max_tokens`` tokens."""

    def __init__(
        self,
        tokenizer,
        max_tokens: int,
        sentences: int = 5,
        overlap: int = 0,
        min_chars: int = 20,
        title_in_budget: bool = True,
    ):
        if overlap >= sentences:
            raise ValueError(f"overlap ({overlap}) must be smaller than sentences per chunk ({sentences})")
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.sentences = sentences
        self.overlap = overlap
        self.min_chars = min_chars
        self.title_in_budget = title_in_budget

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    def budget(self, title: str) -> int:
        reserve = self.count([title])[0] + 1 if (self.title_in_budget and title) else 0
        return max(16, self.max_tokens - min(reserve, self.max_tokens // 2))

    def _cut(self, text: str, start: int, end: int, budget: int) -> list[tuple[int, int, int]]:
        """Cut one over-long span at token boundaries: (start, end, n_tokens) pieces."""
        enc = self.tokenizer(text[start:end], add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
        pieces = []
        for i in range(0, len(offsets), budget):
            window = offsets[i : i + budget]
            pieces.append((start + window[0][0], start + window[-1][1], len(window)))
        return pieces

    def chunk(self, text: str, title: str = "") -> list[Chunk]:
        budget = self.budget(title)
        spans = split_sentences(text)
        units: list[tuple[int, int, int]] = []  # sentence (or sentence piece): start, end, tokens
        for (a, b), n in zip(spans, self.count([text[a:b] for a, b in spans]), strict=True):
            units.extend(self._cut(text, a, b, budget) if n > budget else [(a, b, n)])

        groups: list[list[tuple[int, int, int]]] = []
        i = 0
        while i < len(units):
            group, tokens = [units[i]], units[i][2]
            j = i + 1
            while j < len(units) and len(group) < self.sentences and tokens + units[j][2] <= budget:
                group.append(units[j])
                tokens += units[j][2]
                j += 1
            groups.append(group)
            i = j - self.overlap if (self.overlap and j < len(units) and j - self.overlap > i) else j

        # A tiny trailing group joins its predecessor when that still fits.
        if len(groups) > 1:
            last = groups[-1]
            if last[-1][1] - last[0][0] < self.min_chars and sum(u[2] for u in groups[-2] + last) <= budget:
                groups[-2] = groups[-2] + [u for u in last if u not in groups[-2]]
                groups.pop()

        chunks = []
        texts = [text[g[0][0] : g[-1][1]] for g in groups]
        for g, t, n in zip(groups, texts, self.count(texts), strict=True):
            if n > budget and len(g) > 1:  # tokenizers that merge across spaces: split and recount
                half = len(g) // 2
                for part in (g[:half], g[half:]):
                    pt = text[part[0][0] : part[-1][1]]
                    chunks.append(Chunk(pt, part[0][0], part[-1][1], self.count([pt])[0], len(part)))
                continue
            chunks.append(Chunk(t, g[0][0], g[-1][1], n, len(g)))
        return chunks


def passage_text(title: str | None, text: str | None) -> str:
    """A passage as it is embedded, trained on and evaluated: ``title + " " + text``, stripped, as MTEB
    embeds BEIR documents (the title is left out when empty)."""
    text = text or ""
    return f"{title} {text}".strip() if title else text.strip()
