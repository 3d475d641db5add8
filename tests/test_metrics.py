"""BEIR metrics against hand-computed examples and against pytrec_eval (what MTEB uses)."""

import math
import random

import pytest

from trainer.metrics import (
    average_precision_at_k,
    deltas,
    evaluate_run,
    ndcg_at_k,
    precision_at_k,
    ranked,
    recall_at_k,
    reciprocal_rank_at_k,
)

# Ranking d1 d2 d3 d4 d5; d2 (rel 1) and d4 (rel 2) relevant, d9 (rel 1) relevant but never retrieved.
RUN = {"q": {"d1": 0.9, "d2": 0.8, "d3": 0.7, "d4": 0.6, "d5": 0.5}}
QRELS = {"q": {"d2": 1, "d4": 2, "d9": 1, "d3": 0}}
RANKING = ["d1", "d2", "d3", "d4", "d5"]
L2 = math.log2


def test_ranking_breaks_ties_by_doc_id_descending():
    assert ranked({"a": 1.0, "b": 1.0, "c": 2.0}) == ["c", "b", "a"]


def test_ndcg_by_hand():
    dcg5 = 1 / L2(3) + 2 / L2(5)  # d2 at rank 2, d4 at rank 4 (gain = relevance)
    ideal5 = 2 / L2(2) + 1 / L2(3) + 1 / L2(4)  # 2, 1, 1
    assert ndcg_at_k(RANKING, QRELS["q"], 5) == pytest.approx(dcg5 / ideal5)
    assert ndcg_at_k(RANKING, QRELS["q"], 1) == 0.0
    assert ndcg_at_k(RANKING, QRELS["q"], 2) == pytest.approx((1 / L2(3)) / (2 + 1 / L2(3)))
    assert ndcg_at_k(["d4", "d2", "d9"], QRELS["q"], 3) == pytest.approx(1.0)


def test_recall_precision_by_hand():
    rels = QRELS["q"]
    assert recall_at_k(RANKING, rels, 1) == 0.0
    assert recall_at_k(RANKING, rels, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKING, rels, 5) == pytest.approx(2 / 3)
    assert precision_at_k(RANKING, rels, 2) == pytest.approx(1 / 2)
    assert precision_at_k(RANKING, rels, 5) == pytest.approx(2 / 5)
    assert precision_at_k(RANKING, rels, 10) == pytest.approx(2 / 10)  # divides by k, as trec_eval


def test_map_mrr_by_hand():
    rels = QRELS["q"]
    # precision at each relevant hit: 1/2 (d2), 2/4 (d4); divided by the 3 relevant documents
    assert average_precision_at_k(RANKING, rels, 5) == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert average_precision_at_k(RANKING, rels, 3) == pytest.approx((1 / 2) / 3)
    assert average_precision_at_k(RANKING, rels, 1) == 0.0
    assert reciprocal_rank_at_k(RANKING, rels, 1) == 0.0
    assert reciprocal_rank_at_k(RANKING, rels, 5) == pytest.approx(0.5)


def test_evaluate_run_averages_judged_queries_and_counts_missing_as_zero():
    run = {"q1": {"a": 1.0, "b": 0.5}, "q2": {"c": 1.0}}
    qrels = {"q1": {"a": 1}, "q2": {"x": 1}, "q3": {"y": 1}, "q4": {"z": 0}}  # q3 not run, q4 unjudged
    scores = evaluate_run(run, qrels, k_values=(1, 10))
    assert scores["mrr_at_10"] == pytest.approx(1 / 3)
    assert scores["ndcg_at_1"] == pytest.approx(1 / 3)
    assert scores["recall_at_10"] == pytest.approx(1 / 3)
    assert scores["precision_at_1"] == pytest.approx(1 / 3)
    assert set(scores) == {f"{m}_at_{k}" for m in ("ndcg", "map", "recall", "precision", "mrr") for k in (1, 10)}
    assert evaluate_run(run, {"q": {"a": 0}}) == {}
    with pytest.raises(ValueError):
        evaluate_run(run, qrels, k_values=(0,))


def test_deltas_absolute_and_relative():
    d = deltas({"ndcg_at_10": 0.5, "mrr_at_10": 0.0}, {"ndcg_at_10": 0.6, "mrr_at_10": 0.1})
    assert d["ndcg_at_10"]["abs"] == pytest.approx(0.1)
    assert d["ndcg_at_10"]["rel"] == pytest.approx(0.2)
    assert d["mrr_at_10"]["rel"] is None


def test_matches_pytrec_eval_on_random_runs():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = random.Random(0)
    docs = [f"d{i}" for i in range(60)]
    qrels, run = {}, {}
    for q in range(40):
        qid = f"q{q}"
        qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 6))}
        if not any(v > 0 for v in qrels[qid].values()):
            qrels[qid][docs[0]] = 1
        # rounded scores create ties, which must be broken like trec_eval
        run[qid] = {d: round(rng.random(), 1) for d in rng.sample(docs, 30)}
    ks = (1, 5, 10, 100)
    ours = evaluate_run(run, qrels, ks)
    measures = {"ndcg_cut." + ",".join(map(str, ks)), "map_cut." + ",".join(map(str, ks)),
                "recall." + ",".join(map(str, ks)), "P." + ",".join(map(str, ks))}
    theirs = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    for k in ks:
        for ours_key, trec_key in (("ndcg", "ndcg_cut"), ("map", "map_cut"), ("recall", "recall"), ("precision", "P")):
            expected = sum(v[f"{trec_key}_{k}"] for v in theirs.values()) / len(theirs)
            assert ours[f"{ours_key}_at_{k}"] == pytest.approx(expected, abs=1e-9), (ours_key, k)
