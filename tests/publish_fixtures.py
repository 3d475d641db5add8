"""A small, real run directory for the publish stage: every upstream stage is a tiny Stage run through
``run_stage`` (so manifests and fingerprints are real), writing what the real stages write."""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from trainer.config import Config, load_config
from trainer.dataset_io import save_rows
from trainer.pipeline import STAGES
from trainer.rundir import Input, RunDir, Stage, StageContext, run_stage

PLANTED_TOKEN = "hf_PlantedFakeTokenDoNotLeak0123456789"

DOCS = [
    ("d1", "Statins", "Statins inhibit HMG-CoA reductase. They lower LDL cholesterol made by the liver."),
    ("d2", "Insulin", "Insulin lets muscle cells take up glucose. It is released after a meal."),
    ("d3", "Asthma", "Asthma attacks follow airway inflammation. Cold air can trigger bronchospasm."),
    ("d4", "Vitamin D", "The skin makes vitamin D from cholesterol. Ultraviolet B light drives the reaction."),
]

REPORT_IMPROVED: dict[str, Any] = {
    "tasks": [
        {"task": "synthetic held-out", "kind": "synthetic", "metric": "ndcg_at_10", "base": 0.61, "tuned": 0.74,
         "n_queries": 20, "delta": 0.13, "delta_rel": 0.21},
        {"task": "SciFact", "kind": "MTEB", "metric": "ndcg_at_10", "base": 0.645, "tuned": 0.661, "status": "ok",
         "delta": 0.016, "delta_rel": 0.025,
         "contamination": {"n_docs": 5183, "exact": 4, "partial": 0, "fraction": 0.00077, "examples": ["1"]},
         "leaderboard": {"n_models": 300, "base_leaderboard": 0.645,
                         "best": {"model": "big/model", "score": 0.80, "n_parameters": 7_000_000_000},
                         "best_under_100m": {"model": "small/model", "score": 0.72, "n_parameters": 33_000_000},
                         "best_under_500m": {"model": "mid/model", "score": 0.76, "n_parameters": 335_000_000}}},
        {"task": "NFCorpus", "kind": "MTEB", "metric": "ndcg_at_10", "base": None, "tuned": None,
         "status": "not available offline", "note": "no BEIR folder", "delta": None, "delta_rel": None},
    ],
    "compared": 2,
    "regressions": [],
    "no_regressions": True,
    "improved_everywhere": True,
    "regression_tolerance": 0.0,
    "matryoshka": {"base": {"384": 0.61, "128": 0.55}, "tuned": {"384": 0.74, "128": 0.70}},
    "unavailable": ["NFCorpus"],
    "contaminated": {"SciFact": 0.00077},
    "models": {"base": "sentence-transformers/all-MiniLM-L6-v2", "tuned": "stages/train/model"},
}


def report_with_regression() -> dict[str, Any]:
    report = json.loads(json.dumps(REPORT_IMPROVED))
    report["tasks"][1].update(tuned=0.60, delta=-0.045)
    report["regressions"] = [{"task": "SciFact", "base": 0.645, "tuned": 0.60, "delta": -0.045}]
    report["no_regressions"] = report["improved_everywhere"] = False
    return report


MTEB_RESULT = {
    "dataset_revision": "d56462d0e63a25450459c4f213e49ffdb866f7f9",
    "task_name": "SciFact",
    "mteb_version": "2.26.24",
    "evaluation_time": 12.5,
    "kg_co2_emissions": None,
    "scores": {"test": [{"hf_subset": "default", "languages": ["eng-Latn"], "main_score": 0.661,
                         "ndcg_at_10": 0.661, "recall_at_10": 0.79}]},
}


def _ingest(ctx: StageContext) -> dict[str, Any]:
    docs = [{"doc_id": d, "title": t, "text": x, "source": "fake", "sha256": d} for d, t, x in DOCS]
    save_rows(docs, ctx.dir / "documents", {k: "string" for k in docs[0]})
    chunks = [{"chunk_id": f"{d}#0", "doc_id": d, "title": t, "text": x} for d, t, x in DOCS]
    save_rows(chunks, ctx.dir / "chunks", {k: "string" for k in chunks[0]})
    return {"documents": len(docs), "chunks": len(chunks)}


def _generate(ctx: StageContext) -> dict[str, Any]:
    from hub_cards.synthetic import synthetic_card

    rows = [{"query_id": f"q{i}", "query": f"what does the passage about {t.lower()} say", "type": "factual",
             "hops": 1, "positive_chunk_ids": [f"{d}#0"]} for i, (d, t, _) in enumerate(DOCS)]
    save_rows(rows, ctx.dir / "queries", {"query_id": "string", "query": "string", "type": "string",
                                          "hops": "int32", "positive_chunk_ids": ["string"]})
    counts = {"queries": len(rows), "generator": "fake-llm", "judge": "off"}
    (ctx.dir / "README.md").write_text(str(synthetic_card(ctx.cfg, counts)), encoding="utf-8")
    return counts


def _mine(ctx: StageContext) -> dict[str, Any]:
    k = 2
    rows = []
    for i, (_, t, x) in enumerate(DOCS):
        negs = [DOCS[(i + j) % len(DOCS)] for j in range(1, k + 1)]
        rows.append({"anchor": f"about {t}", "positive": f"{t} {x}",
                     **{f"negative_{j + 1}": f"{n[1]} {n[2]}" for j, n in enumerate(negs)}})
    save_rows(rows, ctx.dir / "train", {c: "string" for c in rows[0]})
    stats = {"mode": "hybrid", "fusion": "rrf", "num_negatives": k, "margin": 0.95, "margin_type": "perc",
             "candidates": 50, "negatives_found_per_query": {"0": 0, "1": 0, "2": len(rows)},
             "negative_sources": {"dense": 3, "bm25": 2, "both": 3},
             "scores": {"positive": {"mean": 0.7}, "negative": {"mean": 0.4}}}
    (ctx.dir / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
    return {"train_rows": len(rows), "queries_train": len(rows), "negatives_mean": k,
            "queries_dropped": {"spans_split": 1}}


@functools.cache
def _trainer_card(model_dir: Path) -> str:
    """The README.md sentence-transformers writes when its trainer saves a model: its template rendered from
    the model's card data, tagged generated_from_trainer (rendered once per process, not per publish)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.model_card import generate_model_card

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    model.model_card_data.local_files_only = True
    model.model_card_data.add_tags("generated_from_trainer")
    return generate_model_card(model)


def _train(ctx: StageContext) -> dict[str, Any]:
    from trainer.models import resolve_model

    src = Path(resolve_model("sentence-transformers/all-MiniLM-L6-v2", offline=True))
    dest = ctx.dir / "model"
    try:  # hard links: nothing writes into either folder, and it saves copying 90 MB per test
        shutil.copytree(src, dest, copy_function=os.link, ignore=shutil.ignore_patterns("README.md"))
    except OSError:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("README.md"))
    (dest / "README.md").write_text(_trainer_card(src), encoding="utf-8")
    (dest / "training_args.json").write_text(json.dumps({"hub_token": "<HUB_TOKEN>", "lr": 1e-5}))
    return {"rows": 4, "steps": 2, "epochs": 1, "batch_size": 4, "lr": 1e-5, "device": "cpu",
            "train_seconds": 42.0, "best_val_ndcg@10": 0.7, "final_loss": 0.5, "loss": "mnrl+matryoshka",
            "negatives_per_row": 2, "precision": "fp32"}


def _evaluate_with(report: dict[str, Any]):
    def run(ctx: StageContext) -> dict[str, Any]:
        result_files = {"SciFact": "results/domain-embed__fake/tuned/SciFact.json"}
        (ctx.dir / "report.json").write_text(json.dumps({**report, "result_files": result_files}), encoding="utf-8")
        tuned = ctx.dir / "mteb" / "results" / "domain-embed__fake" / "tuned"
        tuned.mkdir(parents=True)
        (tuned / "SciFact.json").write_text(json.dumps(MTEB_RESULT), encoding="utf-8")
        base = ctx.dir / "mteb" / "results" / "sentence-transformers__all-MiniLM-L6-v2" / "base"
        base.mkdir(parents=True)
        (base / "SciFact.json").write_text(json.dumps({**MTEB_RESULT, "scores": {}}), encoding="utf-8")
        return {"regressions": len(report["regressions"])}
    return run


def _export(ctx: StageContext) -> dict[str, Any]:
    # the export stage's layout: a sentence-transformers folder whose onnx/ holds the ONNX files
    (ctx.dir / "onnx" / "onnx").mkdir(parents=True)
    (ctx.dir / "onnx" / "modules.json").write_text("[]")
    (ctx.dir / "onnx" / "onnx" / "model.onnx").write_bytes(b"\x08\x07fake-onnx-graph\x00" * 64)
    (ctx.dir / "onnx" / "onnx" / "model_qint8_avx512.onnx").write_bytes(b"\x08\x07fake-int8\x00" * 32)
    (ctx.dir / "onnx" / "serving.json").write_text(json.dumps({
        "backend": "onnx", "file": "onnx/model_qint8_avx512.onnx", "cpu": "Test CPU",
        "sentences_per_s": {"pytorch": 20.0, "fp32": 25.0, "int8": 40.0}, "why": "int8: fastest that passed parity"}))
    return {"files": 2}


def make_config(run_dir: Path, *overrides: str) -> Config:
    return load_config(None, [f"run.dir={run_dir}", "ingest.source=data:scifact", "domain=medical",
                              "publish.name=minilm-medical-test", "publish.retry_backoff_s=0.05",
                              "train.matryoshka_dims=[384, 128]", *overrides])


def build_run(run_dir: Path, *, evaluate: dict[str, Any] | None = REPORT_IMPROVED, export: bool = True,
              datasets: bool = True) -> Config:
    """Run the fake upstream stages in ``run_dir``; returns the config."""
    cfg = make_config(run_dir)
    rd = RunDir(run_dir)
    # stand-ins that keep the real stages' declared reads and writes (minus what the fakes do not make)
    def fake(real: Stage, run: Any, **kw: Any) -> Stage:
        return replace(real, run=run, external=None, **kw)

    stages = [fake(STAGES["ingest"], _ingest, writes=("documents", "chunks"))]
    if datasets:
        stages += [fake(STAGES["generate"], _generate, writes=("queries", "README.md")),
                   fake(STAGES["mine"], _mine, reads=(Input("generate", "queries"),), writes=("train", "stats.json"))]
    stages.append(fake(STAGES["train"], _train, reads=(), writes=("model",)))
    if evaluate is not None:
        stages.append(fake(STAGES["evaluate"], _evaluate_with(evaluate), reads=(Input("train", "model"),),
                           writes=("report.json", "mteb"), may_write=()))
    if export:
        stages.append(fake(STAGES["export"], _export, reads=(Input("train", "model"),), writes=("onnx",)))
    for stage in stages:
        run_stage(stage, cfg, rd)
    rd.save_config(cfg)  # <run>/config.yaml: what a subprocess loads with -c
    return cfg
