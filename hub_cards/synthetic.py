"""Dataset card for the synthetic query set written by the generate stage.

Example::

    >>> from trainer.config import load_config
    >>> card = synthetic_card(load_config(None, ["ingest.source=data:scifact"]), {"queries": 10, "generator": "g"})
    >>> "synthetic" in card.data.tags
    True
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from hub_cards import counts_rows
from trainer.config import Config
from trainer.prompts import PROMPT_VERSION

_TEMPLATE = """---
{card_data}
---

# Synthetic queries for {source}

Queries written by an LLM for chunks of `{source}` ({domain}), for training a domain embedding model
with domain-embed. Each row holds the query, its type (factual, contextual, multi-hop), the chunks it
was written from (`positive_chunk_ids`, `hop_contexts`) and, when a judge ran, its scores.

## Generation
- generator: `{generator}` ({generator_kind})
{generator_detail}- prompt version: `{prompt_version}`
- questions per chunk: {qpc}; hops: {min_hops}-{max_hops}; temperature {temperature}
- LLM judge: {judge}{judge_model} (threshold {threshold}/10)
- near-duplicate filter: cosine >= {dedupe}; easiness filter: copied runs >= {copy:.0%} of the query
- candidates per query: {candidates} (the valid one sharing the fewest content words with its passage is kept;
  `mean word overlap` below is that share, averaged over the kept queries)

## Counts
| what | count |
|---|---|
{rows}

## Licence and provenance
The queries are derived from the source corpus and inherit its licence; check it before publishing.
Queries were generated from corpus chunks only, never from evaluation queries or relevance labels.
"""


def synthetic_card(cfg: Config, counts: dict[str, Any]) -> DatasetCard:
    g = cfg.generate
    data = DatasetCardData(
        task_categories=["sentence-similarity", "text-retrieval"],
        tags=["domain-embed", "synthetic", cfg.domain],
        language=["en"],
        pretty_name=f"Synthetic queries ({cfg.ingest.source})",
    )
    kind = counts.get("generator_kind", "embedded" if not g.endpoint else "endpoint")
    kinds = {"embedded": "embedded llama.cpp server, offline", "provider": "Hugging Face Inference Providers",
             "inference_endpoint": "dedicated Hugging Face Inference Endpoint (TGI)", "endpoint": "an endpoint URL"}
    detail = ""
    if counts.get("provider"):
        detail = f"- provider: `{counts['provider']}`, model `{counts.get('provider_model')}`\n"
    ep = counts.get("inference_endpoint")
    if ep:
        detail = (f"- inference endpoint: `{ep.get('namespace')}/{ep.get('name')}` serving `{ep.get('repository')}` "
                  f"({'created by this run' if ep.get('created_by_run') else 'the owner’s existing endpoint'}, "
                  "paused when generation ended)\n")
    judge_model = f", model `{counts['judge_model']}`" if counts.get("judge_model") else ""
    text = _TEMPLATE.format(
        generator_kind=kinds.get(kind, kind), generator_detail=detail, judge_model=judge_model,
        card_data=data.to_yaml(), source=cfg.ingest.source, domain=cfg.domain,
        generator=counts.get("generator", g.endpoint or g.generator), prompt_version=PROMPT_VERSION,
        qpc=g.questions_per_chunk, min_hops=g.min_hops, max_hops=g.max_hops, temperature=g.temperature,
        judge=counts.get("judge", g.judge), threshold=g.judge_threshold, dedupe=g.dedupe_similarity,
        copy=g.max_copy_fraction, candidates=g.candidates, rows=counts_rows(counts),
    )
    return DatasetCard(text)
