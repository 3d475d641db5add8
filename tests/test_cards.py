"""Model and training-set cards: metadata the Hub reads back, and no improvement claim without evidence."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard, ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from hub_cards.model import ST_MODEL_ID_PLACEHOLDER, ModelFacts, eval_rows, model_card, verdict
from hub_cards.training_set import training_set_card
from tests.publish_fixtures import REPORT_IMPROVED, make_config, report_with_regression
from tests.train_fixtures import FAKE_MINE, TINY
from trainer import publish, train
from trainer.config import load_config
from trainer.models import resolve_model
from trainer.rundir import RunDir, run_stage

FACTS = ModelFacts(embedding_dim=384, max_seq_length=256, n_parameters=22_713_216)
DATASETS = {"queries": "me/x-queries", "training_set": "me/x-training-set"}


@pytest.fixture(scope="module")
def st_card() -> str:
    """sentence-transformers' card for the (untrained) base model, rendered by its own template."""
    return publish.sentence_transformers_card(Path(resolve_model("sentence-transformers/all-MiniLM-L6-v2")), "me/x")


def _card(tmp_path, st_card, report, **kw) -> ModelCard:
    cfg = make_config(tmp_path, *kw.pop("overrides", ()))
    return model_card(cfg, "me/x", FACTS, st_card=st_card,
                      train_counts={"rows": 4, "train_seconds": 120.0, "device": "cuda"},
                      report=report, datasets=DATASETS, onnx_files=["onnx/model.onnx"],
                      versions={"sentence-transformers": "5.7.0"}, license_id="apache-2.0", **kw)


def test_model_card_metadata_round_trips_through_the_hub_card_classes(tmp_path, st_card):
    card = _card(tmp_path, st_card, REPORT_IMPROVED)
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
def test_model_card_claims_no_improvement_without_a_clean_evaluation(tmp_path, st_card, report):
    card = _card(tmp_path, st_card, report)
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


@pytest.fixture(scope="module")
def trained_and_published(tmp_path_factory):
    """A real tiny model (2 steps, validation on 2 held-out queries) trained by the train stage, then its card
    built by the publish stage (no token: the folder only)."""
    run_dir = tmp_path_factory.mktemp("card-run")
    cfg = load_config(None, [*TINY, f"run.dir={run_dir}", "train.epochs=1", "domain=medical",
                             "ingest.source=data:scifact", "publish.name=tiny-medical",
                             "publish.token_env=NO_SUCH_TOKEN"])
    rd = RunDir(run_dir)
    run_stage(FAKE_MINE, cfg, rd)
    run_stage(train.STAGE, cfg, rd)
    outcome = run_stage(publish.STAGE, cfg, rd)
    assert outcome.manifest["counts"]["mode"] == "no_token"
    return run_dir, ModelCard((run_dir / "stages/publish/model/README.md").read_text(encoding="utf-8"))



def test_model_card_says_what_the_export_stage_measured_and_serves(tmp_path, st_card):
    serving = {"backend": "onnx", "file": "onnx/model_qint8_avx512_vnni.onnx", "cpu": "Intel Xeon @ 2.80GHz",
               "sentences_per_s": {"pytorch": 33.4, "fp32": 27.5, "int8": 41.7},
               "why": "int8 (onnx/model_qint8_avx512_vnni.onnx): fastest that passed parity"}
    text = ModelCard(str(_card(tmp_path, st_card, REPORT_IMPROVED, serving=serving))).text
    assert ("measured by the export stage on Intel Xeon @ 2.80GHz (sentences/s): pytorch 33.4, fp32 27.5, "
            "int8 41.7. There `trainer.serve` serves onnx/model_qint8_avx512_vnni.onnx by default") in text
    torch_fastest = {**serving, "backend": "pytorch", "sentences_per_s": {"pytorch": 50.0, "fp32": 40.0}}
    assert "serves the PyTorch model by default" in ModelCard(str(_card(tmp_path, st_card, REPORT_IMPROVED,
                                                                        serving=torch_fastest))).text
    bf16 = {**serving, "backend": "pytorch", "dtype": "bfloat16", "cpu": "AMD EPYC",
            "cpu_flags": ["avx512_vnni", "avx512_bf16"], "sentences_per_s": {"pytorch": 23.9, "bf16": 45.9},
            "skipped": {"openvino": "optional backend not installed"}}
    text = ModelCard(str(_card(tmp_path, st_card, REPORT_IMPROVED, serving=bf16))).text
    assert ("on AMD EPYC (avx512_vnni avx512_bf16) (sentences/s): pytorch 23.9, bf16 45.9; not run there: openvino "
            "(optional backend not installed). There `trainer.serve` serves the PyTorch model in bfloat16") in text

def test_card_of_a_trained_model_keeps_sentence_transformers_sections_and_adds_ours(trained_and_published):
    run_dir, card = trained_and_published
    text = card.text
    # the real limit (the model's own 256; trained at 32), never "?" or null
    assert "- **Maximum Sequence Length:** 256 tokens" in text
    assert "Maximum Sequence Length:** ?" not in text and "max_seq_length: null" not in text
    # sentence-transformers' own sections, as its trainer wrote them next to the weights
    theirs = (run_dir / "stages/train/model/README.md").read_text(encoding="utf-8")
    assert "generated_from_trainer" in ModelCard(theirs).data.tags
    architecture = re.search(r"### Full Model Architecture\n\n```\n(.*?)```", theirs, re.S)[1]
    assert "(0): Transformer(" in architecture and architecture in text
    for needed in ("### Direct Usage (Sentence Transformers)", "### Training Dataset", "* Size: 14 training samples",
                   "[<code>MatryoshkaLoss</code>]", "#### Non-Default Hyperparameters", "### Training Logs",
                   "### Framework Versions", "- Sentence Transformers: 5.7.0", "* Dataset: `val`",
                   "#### MultipleNegativesRankingLoss", "## Additional Resources"):
        assert needed in theirs and needed in text, needed
    repo_id = "YOUR_HF_USERNAME/tiny-medical"
    assert f'model = SentenceTransformer("{repo_id}")' in text and ST_MODEL_ID_PLACEHOLDER not in text
    # ours
    for needed in ("# all-MiniLM-L6-v2 fine-tuned for medical retrieval", "- **Subcategory:** medical",
                   "- **Base model:** [sentence-transformers/all-MiniLM-L6-v2]", "- **License:** apache-2.0",
                   "- **Matryoshka dimensions:** 384, 128, 64", "### Retrieval (Sentence Transformers)",
                   "### OpenAI-compatible embeddings API", "has not been evaluated against its base model",
                   "sentence-transformers' validation during training", "## Contamination disclosure",
                   "### Training recipe (domain-embed)", "- hard negatives per row: 3"):
        assert needed in text, needed
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert [h for h in headings if not h.startswith(("Bias", "Glossary", "Model Card"))] == [
        "Model Details", "Usage", "Evaluation", "Contamination disclosure", "Training Details",
        "Additional Resources", "Citation"]
    # metadata: theirs (widget examples, trainer tags) merged with ours; no evaluation, so no model-index
    data = card.data
    assert data.widget and data.widget == ModelCard(theirs).data.widget
    assert {"generated_from_trainer", "domain-embed", "medical", "loss:MatryoshkaLoss"} <= set(data.tags)
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2" and data.license == "apache-2.0"
    assert data.eval_results is None and "improv" not in text.lower()


def test_model_facts_read_the_limit_where_sentence_transformers_5_keeps_it(trained_and_published):
    run_dir, _ = trained_and_published
    model_dir = run_dir / "stages/train/model"
    assert "max_seq_length" not in json.loads((model_dir / "sentence_bert_config.json").read_text())
    facts, _ = publish.model_facts(model_dir)
    assert facts.max_seq_length == 256 and facts.embedding_dim == 384 and facts.n_parameters == 22_713_216


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
