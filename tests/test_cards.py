"""Model and training-set cards: metadata the Hub reads back, and no improvement claim without evidence."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import DatasetCard, ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from hub_cards.model import ModelFacts, eval_rows, model_card, verdict
from hub_cards.training_set import training_set_card
from tests.publish_fixtures import REPORT_IMPROVED, make_config, report_with_regression

FACTS = ModelFacts(embedding_dim=384, max_seq_length=256, n_parameters=22_713_216, architecture="SentenceTransformer()")
DATASETS = {"queries": "me/x-queries", "training_set": "me/x-training-set"}


def _card(tmp_path, report, **kw) -> ModelCard:
    cfg = make_config(tmp_path, *kw.pop("overrides", ()))
    return model_card(cfg, "me/x", FACTS, train_counts={"rows": 4, "train_seconds": 120.0, "device": "cuda"},
                      report=report, datasets=DATASETS, onnx_files=["onnx/model.onnx"],
                      versions={"sentence-transformers": "5.7.0"}, license_id="apache-2.0", **kw)


def test_model_card_metadata_round_trips_through_the_hub_card_classes(tmp_path):
    card = _card(tmp_path, REPORT_IMPROVED)
    reloaded = ModelCard(str(card))
    data = reloaded.data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.library_name == "sentence-transformers" and data.pipeline_tag == "sentence-similarity"
    assert data.license == "apache-2.0" and data.datasets == ["me/x-training-set", "me/x-queries"]
    assert {"medical", "matryoshka", "onnx", "loss:MatryoshkaLoss"} <= set(data.tags)
    # model-index as the Hub parses it: only the evaluated tasks, with the tuned scores
    name, results = model_index_to_eval_results(data.to_dict()["model-index"])
    assert name == data.model_name
    by_dataset = {r.dataset_name: r for r in results}
    assert set(by_dataset) == {"MTEB SciFact", "held-out synthetic split (test documents)"}
    assert by_dataset["MTEB SciFact"].dataset_type == "mteb/scifact"
    assert by_dataset["MTEB SciFact"].metric_value == pytest.approx(0.661)
    assert by_dataset["held-out synthetic split (test documents)"].dataset_type == "me/x-queries"
    text = reloaded.text
    for needed in ("Improvement on every compared task", "| SciFact | MTEB | ndcg_at_10 | 0.6450 | 0.6610 | +0.0160 "
                   "| 0.6450 | 0.7200 (small/model, 33M)", "Matryoshka", "truncate_dim=128", 'backend="onnx"',
                   '"file_name": "onnx/model.onnx"', "/v1/embeddings", "SciFact (0.1% of its documents)",
                   "training time: 2.0 minutes", "Subcategory:** medical", "sentence-transformers: 5.7.0"):
        assert needed in text, needed


@pytest.mark.parametrize("report", [None, report_with_regression(), {"tasks": []}], ids=["none", "regression", "empty"])
def test_model_card_claims_no_improvement_without_a_clean_evaluation(tmp_path, report):
    card = _card(tmp_path, report)
    text = str(card).lower()
    assert "improv" not in text
    if report and report["tasks"]:
        assert "regressions:** the fine-tuned model scores below its base model on scifact" in text
        scifact = [r for r in ModelCard(str(card)).data.eval_results if r.dataset_name == "MTEB SciFact"]
        assert scifact[0].metric_value == pytest.approx(0.60)  # the real score is still published
    else:
        assert "has not been evaluated against its base model" in text
        assert "not measured" in text or "holds no overlap measurement" in text
        assert ModelCard(str(card)).data.eval_results is None


def test_verdict_reads_reports_defensively():
    assert verdict(None) == ("not_evaluated", [])
    # no regressions/improved_everywhere fields: derived from the rows
    assert verdict({"rows": [{"task": "A", "base": 0.5, "tuned": 0.6}, {"task": "B", "base": 0.5, "tuned": 0.5}]}) \
        == ("no_regression", [])
    nested = {"tasks": {"A": {"base": {"main_score": 0.5}, "tuned": {"main_score": 0.4}}}}
    assert verdict(nested) == ("regression", ["A"])
    # the tolerance of the report is honoured
    assert verdict({"tasks": [{"task": "A", "base": 0.5, "tuned": 0.499}], "regression_tolerance": 0.01})[0] \
        == "no_regression"
    # a report that counts regressions without naming them still blocks the claim
    assert verdict({"tasks": [{"task": "A", "base": 0.5, "tuned": 0.6}], "regressions": 2})[0] == "regression"
    assert verdict({"tasks": [{"task": "A", "base": None, "tuned": 0.6}]})[0] == "not_evaluated"
    assert eval_rows({"tasks": [{"task": "A", "base": float("nan"), "tuned": "x"}]})[0]["delta"] is None


def test_training_set_card(tmp_path):
    cfg = make_config(tmp_path, "publish.license=cc-by-4.0", "mine.num_negatives=2")
    stats = {"mode": "hybrid", "fusion": "rrf", "num_negatives": 2, "margin": 0.95, "margin_type": "perc",
             "negatives_found_per_query": {"0": 0, "1": 1, "2": 9}, "scores": {"positive": {"mean": 0.71}}}
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    card = training_set_card(cfg, {"train_rows": 10, "queries_train": 9, "queries_dropped": {"spans_split": 1}},
                             stats, queries_repo="me/x-queries", configs=configs)
    reloaded = DatasetCard(str(card))
    assert reloaded.data.license == "cc-by-4.0"
    assert reloaded.data.configs == configs
    assert reloaded.data.size_categories == ["n<1K"]
    text = reloaded.text
    for needed in ("`anchor`, `positive`, `negative_1`, `negative_2`", "negatives per query: 2",
                   "0.95 x the lowest positive score", "| train rows | 10 |", "| queries dropped | spans_split: 1 |",
                   "https://huggingface.co/datasets/me/x-queries", "Licence: `cc-by-4.0`, inherited",
                   "negatives found per query: 0: 0, 1: 1, 2: 9"):
        assert needed in text, needed
    assert "check the corpus's terms" not in text
    # without a configured licence the card says so
    default = training_set_card(make_config(tmp_path), {"train_rows": 3}, {})
    assert default.data.license == "other" and "check the corpus's terms" in default.text
    json.dumps(default.data.to_dict())  # plain data, as the Hub stores it
