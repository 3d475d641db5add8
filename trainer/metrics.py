"""BEIR retrieval metrics as pure functions: nDCG, Recall, Precision, MAP and MRR at k.

A *run* maps query id -> {doc id: score}; *qrels* map query id -> {doc id: relevance}. Definitions
follow trec_eval (and so pytrec_eval and MTEB, which uses it):

- documents are ranked by score, ties broken by doc id, descending (trec_eval's order);
- a document is relevant when its relevance is > 0; nDCG uses the relevance itself as gain and
  ``1 / log2(rank + 1)`` as discount, the ideal ranking built from all judged documents;
- Recall@k divides by the number of relevant documents, Precision@k by k, MAP@k (trec_eval's
  ``map_cut``) by the number of relevant documents; MRR@k is 1/rank of the first relevant hit.

Scores are averaged over the queries that have at least one relevant document; such a query missing
from the run scores 0 (trec_eval would silently skip it). Keys use MTEB's names: ``ndcg_at_10``.

Example::

    >>> run = {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.1}}
    >>> qrels = {"q1": {"d2": 1}}
    >>> scores = evaluate_run(run, qrels, k_values=(1, 10))
    >>> scores["mrr_at_10"], scores["recall_at_1"], round(scores["ndcg_at_10"], 4)
    (0.5, 0.0, 0.6309)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

METRICS = ("ndcg", "map", "recall", "precision", "mrr")


def ranked(doc_scores: Mapping[str, float]) -> list[str]:
    """Doc ids best first; ties broken by doc id, descending, as trec_eval does."""
    return [d for d, _ in sorted(doc_scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def _relevant(rels: Mapping[str, int]) -> set[str]:
    return {d for d, r in rels.items() if r > 0}


def dcg(gains: Iterable[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    ideal = dcg(sorted((r for r in rels.values() if r > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg(max(rels.get(d, 0), 0) for d in ranking[:k]) / ideal


def recall_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    relevant = _relevant(rels)
    return len(relevant.intersection(ranking[:k])) / len(relevant) if relevant else 0.0


def precision_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    relevant = _relevant(rels)
    return sum(1 for d in ranking[:k] if d in relevant) / k


def average_precision_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    relevant = _relevant(rels)
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, d in enumerate(ranking[:k]):
        if d in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / len(relevant)


def reciprocal_rank_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    relevant = _relevant(rels)
    for i, d in enumerate(ranking[:k]):
        if d in relevant:
            return 1.0 / (i + 1)
    return 0.0


_FUNCTIONS = {
    "ndcg": ndcg_at_k,
    "map": average_precision_at_k,
    "recall": recall_at_k,
    "precision": precision_at_k,
    "mrr": reciprocal_rank_at_k,
}


def per_query(run: Run, qrels: Qrels, k_values: Sequence[int] = (1, 5, 10, 100)) -> dict[str, dict[str, float]]:
    """query id -> {"ndcg_at_10": ..., ...} for every query with a relevant document."""
    out: dict[str, dict[str, float]] = {}
    for qid, rels in qrels.items():
        if not _relevant(rels):
            continue
        ranking = ranked(run.get(qid, {}))
        out[qid] = {f"{m}_at_{k}": fn(ranking, rels, k) for m, fn in _FUNCTIONS.items() for k in k_values}
    return out


def evaluate_run(run: Run, qrels: Qrels, k_values: Sequence[int] = (1, 5, 10, 100)) -> dict[str, float]:
    """Mean of every metric at every k over the judged queries; ``{}`` when no query is judged."""
    if not k_values or min(k_values) < 1:
        raise ValueError(f"k_values must be positive integers, got {list(k_values)}")
    rows = per_query(run, qrels, k_values)
    if not rows:
        return {}
    keys = [f"{m}_at_{k}" for m in METRICS for k in k_values]
    return {key: sum(r[key] for r in rows.values()) / len(rows) for key in keys}


def deltas(base: Mapping[str, float], tuned: Mapping[str, float]) -> dict[str, dict[str, float | None]]:
    """Per metric: base, tuned, absolute delta and relative delta (None when base is 0)."""
    out: dict[str, dict[str, float | None]] = {}
    for key in base:
        if key not in tuned:
            continue
        b, t = float(base[key]), float(tuned[key])
        out[key] = {"base": b, "tuned": t, "abs": t - b, "rel": (t - b) / b if b else None}
    return out
