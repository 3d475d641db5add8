"""The evaluate capability on real data: mteb on a local BEIR folder reproduces the leaderboard, our own
metrics agree with mteb's, contamination is detected, and the stage flags a worse model."""

import json
import shutil
from pathlib import Path

import datasets
import pytest

from trainer.beir import load_beir
from trainer.config import load_config
from trainer.errors import InputError, StageError
from trainer.evaluate import (
    NOT_AVAILABLE_OFFLINE,
    STAGE,
    TrainingIndex,
    contamination,
    evaluate_model_on_beir,
    run_mteb_tasks,
)
from trainer.leaderboard import compare
from trainer.models import resolve_model
from trainer.paths import find_local_folder
from trainer.retrieval import load_model, model_fingerprint
from trainer.rundir import RunDir, run_stage

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
AILA_STATUTES_LEADERBOARD = 0.20516  # snapshot: results/sentence-transformers__all-MiniLM-L6-v2/.../AILAStatutes.json
SCIFACT_LEADERBOARD = 0.64508


@pytest.fixture(scope="module")
def base_model():
    return load_model(MINILM)


def write_beir(folder, corpus, queries, qrels):
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n"
                                                 for i, (t, x) in corpus.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": x}) + "\n" for i, x in queries.items()))
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, docs in qrels.items() for d, s in docs.items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_load_beir_errors_are_actionable(tmp_path):
    with pytest.raises(InputError, match=r"qrels/test\.tsv"):
        load_beir(tmp_path)
    write_beir(tmp_path, {"d1": ("", "text")}, {"q1": "query"}, {"q2": {"d1": 1}})
    with pytest.raises(InputError, match=r"not in queries\.jsonl"):
        load_beir(tmp_path)


def test_tiny_beir_folder_ranks_the_obvious_document_first(tmp_path, base_model):
    corpus = {
        "cat": ("Cats", "The domestic cat is a small carnivorous mammal kept as a pet."),
        "volcano": ("Volcanoes", "A volcano is a rupture in the crust through which lava erupts."),
        "bank": ("Banking", "Central banks set interest rates to control inflation."),
    }
    queries = {"q1": "Which pet is a small carnivorous mammal?", "q2": "What erupts from a volcano?"}
    write_beir(tmp_path, corpus, queries, {"q1": {"cat": 1}, "q2": {"volcano": 1}})
    res = evaluate_model_on_beir(base_model, tmp_path, k_values=(1, 3), dims=(128, 32))
    assert res["metrics"]["mrr_at_1"] == 1.0 and res["metrics"]["ndcg_at_3"] == 1.0
    assert res["n_queries"] == 2 and res["n_docs"] == 3
    assert set(res["matryoshka"]) == {"128", "32"}


def test_embedding_cache_skips_encoding_and_follows_the_weights(tmp_path, base_model, monkeypatch):
    import copy

    import torch

    corpus = {f"d{i}": ("", f"passage number {i} about topic {i % 3}") for i in range(6)}
    write_beir(tmp_path / "beir", corpus, {"q1": "topic 1"}, {"q1": {"d1": 1}})
    cache = tmp_path / "emb"
    first = evaluate_model_on_beir(base_model, tmp_path / "beir", cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 2  # documents and queries

    def refuse(*args, **kwargs):
        raise AssertionError("encoded again despite the cache")

    monkeypatch.setattr(base_model, "encode_document", refuse)
    monkeypatch.setattr(base_model, "encode_query", refuse)
    assert evaluate_model_on_beir(base_model, tmp_path / "beir", cache_dir=cache) == first
    monkeypatch.undo()

    changed = copy.deepcopy(base_model)
    with torch.no_grad():
        next(changed.parameters()).add_(0.01)
    assert model_fingerprint(changed) != model_fingerprint(base_model)
    evaluate_model_on_beir(changed, tmp_path / "beir", cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 4


LONG = " ".join(
    f"Statins reduce LDL cholesterol number {i} and lower the risk of heart attack in adults who take them daily."
    for i in range(12)
)


def test_contamination_exact_and_chunked():
    docs = {
        "a": {"title": "", "text": "Insulin lowers blood glucose by acting on liver and muscle cells. " * 3},
        "b": {"title": "T", "text": LONG},
        "c": {"title": "", "text": "Unrelated text about volcanoes, lava flows and the tectonic plates here."},
        "d": {"title": "", "text": "Short."},
    }
    index = TrainingIndex.from_texts([
        "  INSULIN lowers blood glucose by acting on liver and muscle cells. " * 3,  # normalised match
        LONG[:len(LONG) // 2], LONG[len(LONG) // 2:],  # b, chunked in two
    ])
    res = contamination(docs, index)
    assert res["exact"] == 1 and res["partial"] == 1  # a, b
    assert res["fraction"] == pytest.approx(2 / 4) and res["examples"] == ["a", "b"]
    assert res["n_docs"] == 4
    clean = contamination(docs, TrainingIndex.from_texts(["nothing in common with any of the documents at all"]))
    assert clean["fraction"] == 0.0 and clean["examples"] == []


@pytest.mark.shared_data
def test_mteb_on_local_aila_statutes_matches_leaderboard(shared_data, base_model, tmp_path):
    import mteb

    folder = find_local_folder("AILAStatutes", shared_data)
    assert folder == shared_data / "aila_statutes"
    corpus = [json.loads(line)["text"] for line in (folder / "corpus.jsonl").read_text().splitlines()]
    index = TrainingIndex.from_texts(corpus[:41])  # half the statutes were "trained on"
    res = run_mteb_tasks(base_model, ["AILAStatutes", "NFCorpus"], output_dir=tmp_path, model_name=MINILM,
                         offline=True, data_root=shared_data, index=index)
    aila = res["AILAStatutes"]
    assert aila["status"] == "ok" and aila["metric"] == "ndcg_at_10"
    assert aila["main_score"] == pytest.approx(AILA_STATUTES_LEADERBOARD, abs=0.005)
    assert aila["contamination"]["fraction"] == pytest.approx(41 / 82, abs=0.02)
    assert res["NFCorpus"]["status"] == NOT_AVAILABLE_OFFLINE
    # the saved file is mteb's own format, readable by mteb's ResultCache
    cache = mteb.ResultCache(tmp_path)
    loaded = cache.load_results(models=[MINILM], tasks=["AILAStatutes"], include_remote=False, require_model_meta=True)
    assert loaded.model_results[0].task_results[0].get_score() == pytest.approx(aila["main_score"])
    # our own metrics on the same folder agree with mteb's evaluator
    ours = evaluate_model_on_beir(base_model, folder)
    saved = json.loads(Path(aila["result_file"]).read_text())["scores"]["test"][0]
    for key in ("ndcg_at_10", "recall_at_100", "map_at_10", "mrr_at_10", "precision_at_5"):
        assert ours["metrics"][key] == pytest.approx(saved[key], abs=1e-4), key


def test_compare_flags_regressions():
    same = compare([{"task": "A", "base": 0.5, "tuned": 0.5}])
    assert same["regressions"] == [] and same["no_regressions"] and not same["improved_everywhere"]
    mixed = compare([{"task": "A", "base": 0.5, "tuned": 0.6}, {"task": "B", "base": 0.5, "tuned": 0.45},
                     {"task": "C", "base": None, "tuned": None}])
    assert [r["task"] for r in mixed["regressions"]] == ["B"]
    assert mixed["compared"] == 2 and not mixed["improved_everywhere"]
    assert compare([{"task": "B", "base": 0.5, "tuned": 0.49}], tolerance=0.02)["regressions"] == []
    assert not compare([])["improved_everywhere"]


def _perturbed_copy(src, dest, scale=0.5):
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(src, device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=gen) * p.std() * scale)
    model.save(str(dest))
    return dest


def make_run(run, shared_data, n_queries, n_docs=None, n_ingested=8):
    """A run directory holding what the train, mine and ingest stages leave behind; the tuned model is
    all-MiniLM-L6-v2 with noise added to its weights, so it must come out worse than its base."""
    train = run / "stages" / "train"
    train.mkdir(parents=True)
    _perturbed_copy(resolve_model(MINILM), train / "model")
    for stage in ("train", "mine", "ingest"):  # finished stages, as the evaluate stage reads them
        (run / "stages" / stage).mkdir(parents=True, exist_ok=True)
        (run / "stages" / stage / "manifest.json").write_text(json.dumps({"status": "complete"}))
    data = load_beir(shared_data / "aila_statutes")
    held_out = dict(list(data.qrels.items())[:n_queries])
    keep = {d for rels in held_out.values() for d in rels}
    keep |= set(list(data.corpus)[: n_docs or len(data.corpus)])
    write_beir(run / "stages" / "mine" / "test_beir",
               {i: (d["title"], d["text"]) for i, d in data.corpus.items() if i in keep},
               {q: data.queries[q] for q in held_out}, held_out)
    docs = list(data.corpus.items())[:n_ingested]
    datasets.Dataset.from_list([{"doc_id": i, "title": d["title"], "text": d["text"]} for i, d in docs]).save_to_disk(
        str(run / "stages" / "ingest" / "documents"))


def check_common_outputs(out, report):
    synthetic = json.loads((out / "synthetic.json").read_text())
    assert set(synthetic["base"]) == {f"{m}_at_{k}" for m in ("ndcg", "map", "recall", "precision", "mrr")
                                      for k in (1, 5, 10, 100)}
    assert synthetic["deltas"]["ndcg_at_10"]["abs"] < 0
    assert set(report["matryoshka"]["base"]) == {"384", "128"}
    assert report["improved_everywhere"] is False and report["no_regressions"] is False
    assert "REGRESSIONS" in (out / "report.md").read_text()
    for name in ("scores", "deltas", "matryoshka"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    return synthetic


@pytest.mark.shared_data
def test_stage_flags_a_worse_model_on_the_synthetic_split(shared_data, tmp_path):
    make_run(tmp_path, shared_data, n_queries=6, n_docs=10)
    cfg = load_config(None, [f"run.dir={tmp_path}", "domain=legal", "evaluate.tasks=[NFCorpus]",
                             "train.matryoshka_dims=[384,128]", f"evaluate.results_dir={shared_data / 'mteb-results'}"])
    outcome = run_stage(STAGE, cfg, RunDir(tmp_path))
    out = tmp_path / "stages" / "evaluate"
    report = json.loads((out / "report.json").read_text())
    synthetic = check_common_outputs(out, report)
    assert synthetic["n_queries"] == 6
    assert [r["task"] for r in report["regressions"]] == ["synthetic held-out"]
    assert report["unavailable"] == ["NFCorpus"]
    nf = next(t for t in report["tasks"] if t["task"] == "NFCorpus")
    assert nf["base"] is None and nf["delta"] is None and nf["leaderboard"]["best"]["score"] > 0.3
    assert outcome.manifest["counts"]["regressions"] == 1
    assert run_stage(STAGE, cfg, RunDir(tmp_path)).action == "skipped"

    quick = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"synthetic_split": False})})
    assert run_stage(STAGE, quick, RunDir(tmp_path)).action != "skipped"  # a new key: the stage runs again
    report = json.loads((out / "report.json").read_text())
    assert not (out / "synthetic.json").exists() and report["regressions"] == []
    assert "synthetic held-out" not in [t["task"] for t in report["tasks"]]


@pytest.mark.slow
@pytest.mark.shared_data
def test_stage_on_aila_statutes_with_contamination(shared_data, tmp_path):
    make_run(tmp_path, shared_data, n_queries=15)
    cfg = load_config(None, [f"run.dir={tmp_path}", "domain=legal", "evaluate.tasks=[AILAStatutes,NFCorpus]",
                             "train.matryoshka_dims=[384,128]", f"evaluate.results_dir={shared_data / 'mteb-results'}"])
    outcome = run_stage(STAGE, cfg, RunDir(tmp_path))
    out = tmp_path / "stages" / "evaluate"
    report = json.loads((out / "report.json").read_text())
    check_common_outputs(out, report)
    aila = next(t for t in report["tasks"] if t["task"] == "AILAStatutes")
    assert aila["base"] == pytest.approx(AILA_STATUTES_LEADERBOARD, abs=0.005)
    assert aila["tuned"] < aila["base"]
    assert aila["leaderboard"]["base_leaderboard"] == pytest.approx(AILA_STATUTES_LEADERBOARD)
    assert aila["contamination"]["exact"] == 8
    assert report["contaminated"]["AILAStatutes"] == pytest.approx(8 / 82)
    assert {r["task"] for r in report["regressions"]} == {"AILAStatutes", "synthetic held-out"}
    assert len(list((out / "mteb" / "results").glob("*/*/AILAStatutes.json"))) == 2  # base and tuned
    counts = outcome.manifest["counts"]
    assert counts["regressions"] == 2 and counts["tasks_evaluated"] == 1 and counts["tasks_unavailable"] == 1


def test_stage_without_tuned_model_says_what_to_run(tmp_path):
    train = tmp_path / "stages" / "train"
    train.mkdir(parents=True)
    (train / "manifest.json").write_text(json.dumps({"status": "complete", "output_fingerprint": "x"}))
    cfg = load_config(None, [f"run.dir={tmp_path}", "evaluate.mteb=false"])
    with pytest.raises(StageError, match="trainer train"):
        run_stage(STAGE, cfg, RunDir(tmp_path))
    shutil.rmtree(train)
    with pytest.raises(StageError, match="train"):
        run_stage(STAGE, cfg, RunDir(tmp_path))


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.timeout(2400)  # 5,183 abstracts on a shared 2-core CPU: 10+ minutes
def test_scifact_reproduces_leaderboard(shared_data, base_model, tmp_path):
    res = run_mteb_tasks(base_model, ["SciFact"], output_dir=tmp_path, model_name=MINILM, offline=True,
                         data_root=shared_data)
    assert res["SciFact"]["main_score"] == pytest.approx(SCIFACT_LEADERBOARD, abs=0.005)
