"""Diagnostics on a BEIR task's dev split (SciFact: the real training queries): why a tuned model gains what it gains.

Three questions, one subcommand each, all scored with the project's metrics on ``qrels/<split>.tsv``:

- ``overlap RUN...``: how much of a query's wording is in its relevant document. Real queries vs the
  synthetic ones of each run (share of content words found in the passage, longest copied run).
- ``coverage RUN``: does the gain come from the documents the generator saw? Base vs tuned nDCG@10 per
  dev query, split by whether one of its relevant documents was in the generation sample.
- ``soup RUN[:WEIGHT]...``: weight averages of tuned models (and of the base, ``base:WEIGHT``; weights
  may be negative, e.g. ``RUN:1.5 base:-0.5`` extrapolates a fine-tune).

    python benchmarks/dev_analysis.py overlap runs/e2e5-scifact-dev-cand3
    python benchmarks/dev_analysis.py coverage runs/e2e-scifact-dev-claims-noval
    python benchmarks/dev_analysis.py soup runs/a:0.5 runs/b:0.5
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from trainer.beir import BeirData, load_beir
from trainer.generate import _words, longest_copied_run, word_overlap
from trainer.metrics import per_query
from trainer.paths import data_dir
from trainer.pipeline import output_path
from trainer.retrieval import load_model, search

BASE = "sentence-transformers/all-MiniLM-L6-v2"


def _describe(label: str, pairs: list[tuple[str, str]]) -> None:
    ov = [word_overlap(q, [t]) for q, t in pairs]
    run = [longest_copied_run(_words(q), [t]) / max(len(_words(q)), 1) for q, t in pairs]
    words = [len(_words(q)) for q, _ in pairs]
    print(f"{label}: {len(pairs)} queries, content words in the passage {statistics.mean(ov):.2f} "
          f"(median {statistics.median(ov):.2f}), longest copied run {statistics.mean(run):.2f} of the query, "
          f"median {statistics.median(words):.0f} words")


def overlap(args, data: BeirData) -> None:
    import datasets

    real = [(data.queries[q], data.corpus[next(d for d, r in rels.items() if r > 0)]["text"])
            for q, rels in data.qrels.items()]
    _describe(f"real {args.split} queries", real)
    for run in args.runs:
        ds = datasets.load_from_disk(str(output_path(run, "generate", "queries")))
        _describe(run, [(r["query"], " ".join(r["hop_contexts"])) for r in ds])


def _ndcg(model, data: BeirData) -> dict[str, float]:
    """nDCG@10 per judged query (the evaluate stage's search and metrics)."""
    rows = per_query(search(model, data, top_k=10)[None], data.qrels, (10,))
    return {q: r["ndcg_at_10"] for q, r in rows.items()}


def coverage(args, data: BeirData) -> None:
    import datasets

    run = Path(args.runs[0])
    queries = datasets.load_from_disk(str(output_path(run, "generate", "queries")))
    seen = {d for r in queries for d in r["positive_doc_ids"]}
    base, tuned = _ndcg(load_model(BASE), data), _ndcg(load_model(output_path(run, "train", "model")), data)
    covered = {q for q in tuned if set(data.qrels[q]) & seen}
    for label, group in (("relevant document in the generation sample", covered),
                         ("not in the sample", set(tuned) - covered), ("all", set(tuned))):
        b = 100 * statistics.mean(base[q] for q in group)
        t = 100 * statistics.mean(tuned[q] for q in group)
        print(f"{label}: {len(group)} queries, base {b:.2f}, tuned {t:.2f}, delta {t - b:+.2f}")
    print(f"({len(seen)} documents had queries written)")


def soup(args, data: BeirData) -> None:
    model = load_model(BASE)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    parts = []
    for spec in args.runs:
        name, _, weight = spec.rpartition(":") if ":" in spec else (spec, "", "")
        w = float(weight) if weight else 1.0 / len(args.runs)
        parts.append((base if name == "base" else load_model(output_path(name, "train", "model")).state_dict(), w))
    mixed = {k: (sum(sd[k] * w for sd, w in parts) if v.is_floating_point() else v) for k, v in base.items()}
    model.load_state_dict(mixed)
    print(f"soup {' + '.join(args.runs)}: nDCG@10 {100 * statistics.mean(_ndcg(model, data).values()):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["overlap", "coverage", "soup"])
    ap.add_argument("runs", nargs="+", help="run directories (soup: RUN[:WEIGHT] or base:WEIGHT)")
    ap.add_argument("--task", default=None, help="BEIR folder (default: <data dir>/scifact)")
    ap.add_argument("--split", default="train")
    args = ap.parse_args()
    data = load_beir(Path(args.task) if args.task else data_dir() / "scifact", args.split)
    {"overlap": overlap, "coverage": coverage, "soup": soup}[args.what](args, data)


if __name__ == "__main__":
    main()
