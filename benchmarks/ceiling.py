"""The ceiling with real queries: SciFact's real training claims instead of synthetic ones, through the product's
own path (``queries:`` in the config, read by the mine stage), with the mine and train settings of
configs/e2e-cpu.yaml. Never the product's result: a user without real queries cannot get it.

    python benchmarks/ceiling.py                       # dev half + SciFact test (mteb)
    python benchmarks/ceiling.py --dev-only --label ep2 --reuse runs/ceiling-scifact-default --set train.epochs=2
    python benchmarks/ceiling.py --score-run runs/e2e-scifact-dev-s8-claims --label synthetic-s8  # no training

SciFact's qrels/train.tsv claims (809; the 2 whose text is also a SciFact test claim, with the same
judged abstract, are left out: the mine stage's leakage guard refuses them) are written to a jsonl file
(query_id, query, doc_id) and split in half by a seeded hash of the query id (``queries.use: both``,
``queries.eval_fraction: 0.5``): one half trains (``queries.ratio: 1``, so the generate stage is skipped),
the other half is the dev split, scored by the evaluate stage as "your queries" over the whole corpus. The
SciFact test split is scored with mteb as the evaluate stage does for every run. The leakage guard of the
mine stage checks the training half against SciFact's test queries. Writes
benchmarks/results/ceiling/scifact-<label>.json (points, 0-100).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.e2e import _commit, _mteb_scores, reuse_generation
from trainer.config import load_config
from trainer.paths import data_dir
from trainer.pipeline import output_path, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("ndcg_at_10", "recall_at_10", "mrr_at_10")


def _pts(d: dict) -> dict:
    return {m: round(100 * float(d[m]), 2) for m in METRICS}


def training_claims(folder: Path) -> tuple[list[dict], list[str]]:
    """(rows of the train split's judged claims, ids of those whose text is also a test claim)."""
    from trainer.beir import load_beir
    from trainer.real_queries import normalized

    train, test = load_beir(folder, "train"), load_beir(folder, "test")
    test_texts = {normalized(t) for t in test.queries.values()}
    rows, left_out = [], []
    for qid, rels in train.qrels.items():
        if normalized(train.queries[qid]) in test_texts:
            left_out.append(qid)
            continue
        rows += [{"query_id": qid, "query": train.queries[qid], "doc_id": d} for d, r in rels.items() if r > 0]
    return rows, left_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default=str(data_dir() / "scifact"))
    ap.add_argument("--config", default=str(ROOT / "configs" / "e2e-cpu.yaml"))
    ap.add_argument("--label", default="default")
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--dev-only", action="store_true", help="score the dev half only (no mteb test run)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--reuse", metavar="RUN", default=None, help="copy ingest and mine from this run dir (a training "
                    "lever then costs its training and evaluation)")
    ap.add_argument("--score-run", metavar="RUN", default=None, help="score RUN's trained model on the dev half of "
                    "--dev-half-of's split (no training): the synthetic-only reference on the same dev queries")
    ap.add_argument("--dev-half-of", metavar="RUN", default=str(ROOT / "runs" / "ceiling-scifact-default"))
    args = ap.parse_args()
    if args.score_run:
        score_run(args)
        return

    folder = Path(args.task).resolve()
    run_dir = Path(args.run_dir or ROOT / "runs" / f"ceiling-{folder.name}-{args.label}")
    if args.reuse:
        print(f"reused from {args.reuse}: {', '.join(reuse_generation(Path(args.reuse).resolve(), run_dir)) or '-'}")
    claims, left_out = training_claims(folder)
    source = run_dir.parent / f"ceiling-{folder.name}-train-claims.jsonl"
    source.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in claims)
    if not source.is_file() or source.read_text() != text:
        source.write_text(text)
    cfg = load_config(args.config, [
        "domain=scientific", f"run.dir={run_dir}", f"ingest.source={folder}", f"queries.source={source}",
        "queries.use=both", "queries.eval_fraction=0.5",
        "queries.ratio=1", "evaluate.tasks=[]" if args.dev_only else "evaluate.tasks=[SciFact]",
        *args.overrides,
    ])
    t0 = time.perf_counter()
    outcomes = {o.stage: o.manifest for o in run_pipeline(cfg, to="evaluate")}
    dev = json.loads(output_path(run_dir, "evaluate", "real.json").read_text())
    result = {
        "what": "ceiling with real queries (SciFact training claims; not the product's result)",
        "label": args.label,
        "overrides": args.overrides,
        "claims": len({r["query_id"] for r in claims}), "left_out_as_test_claims": left_out,
        "train_queries": outcomes["mine"]["counts"]["queries_real_train"],
        "train_rows": outcomes["train"]["counts"].get("rows"),
        "dev": {"n_queries": dev["n_queries"], "base": _pts(dev["base"]), "tuned": _pts(dev["tuned"]),
                "delta_ndcg_at_10": round(100 * (dev["tuned"]["ndcg_at_10"] - dev["base"]["ndcg_at_10"]), 2)},
        "minutes_by_stage": {s: round(m.get("duration_s", 0) / 60, 2) for s, m in outcomes.items()},
        "minutes_wall": round((time.perf_counter() - t0) / 60, 2),
        "settings": {k: cfg.pick(k)[k] for k in ("mine", "train", "queries")},
        "commit": _commit(),
    }
    if not args.dev_only:
        base, tuned = _mteb_scores(run_dir, "SciFact", "base"), _mteb_scores(run_dir, "SciFact", "tuned")
        result["test"] = {"base": _pts(base), "tuned": _pts(tuned),
                          "delta_ndcg_at_10": round(100 * (tuned["ndcg_at_10"] - base["ndcg_at_10"]), 2)}
    out = ROOT / "benchmarks" / "results" / "ceiling" / f"{folder.name}-{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def score_run(args) -> None:
    """The dev half (the mine stage's ``real_beir`` of a ceiling run) scored with another run's model."""
    from benchmarks.e2e import score_also

    half = output_path(Path(args.dev_half_of), "mine", "real_beir")
    cfg = load_config(args.config, [*args.overrides])
    scores = score_also(cfg, Path(args.score_run), [f"{half}:test"])["real_beir"]
    result = {"what": "a run's model on the ceiling's dev half (no training)", "label": args.label,
              "run": str(args.score_run), "dev_half_of": str(args.dev_half_of), "dev": scores, "commit": _commit()}
    out = ROOT / "benchmarks" / "results" / "ceiling" / f"scifact-{args.label}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
