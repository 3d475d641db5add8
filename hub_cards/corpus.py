"""Dataset card for the chunked corpus written by the ingest stage.

Example::

    >>> from trainer.config import load_config
    >>> card = corpus_card(load_config(None, ["ingest.source=builtin:python-docs"]), {"documents": 3, "chunks": 9})
    >>> card.data.task_categories
    ['sentence-similarity']
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from hub_cards import counts_rows
from trainer.config import Config

_TEMPLATE = """---
{card_data}
---

# Chunked corpus: {source}

Documents read by the ingest stage of domain-embed and cut into
sentence-aware chunks for synthetic query generation and hard-negative mining.

## Source
- corpus: `{source}`
- domain: {domain}
- licence: inherited from the source corpus; check it before publishing.

## Chunking
- tokenizer: `{model}`
- at most {sentences} sentences and {max_tokens} tokens per chunk (overlap {overlap} sentences)
- every chunk is `documents.text[start:end]` of its document, with its `doc_id` and title

## Counts
| what | count |
|---|---|
{rows}

Skipped inputs are listed one per line, with their reasons, in `skipped.jsonl`.
"""


def corpus_card(cfg: Config, counts: dict[str, Any]) -> DatasetCard:
    data = DatasetCardData(
        task_categories=["sentence-similarity"],
        tags=["domain-embed", "chunked-corpus", cfg.domain],
        language=["en"],
        pretty_name=f"Chunked corpus ({cfg.ingest.source})",
    )
    text = _TEMPLATE.format(
        card_data=data.to_yaml(),
        source=cfg.ingest.source,
        domain=cfg.domain,
        model=cfg.model.name,
        sentences=cfg.ingest.chunk_sentences,
        max_tokens=counts.get("max_chunk_tokens", cfg.ingest.max_chunk_tokens or "model limit"),
        overlap=cfg.ingest.chunk_overlap_sentences,
        rows=counts_rows(counts),
    )
    return DatasetCard(text)
