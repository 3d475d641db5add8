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
import json
import statistics
from collections import defaultdict
from difflib import SequenceMatcher
from pathlib import Path

from trainer.generate import _words, word_overlap
from trainer.metrics import ndcg_at_k
from trainer.paths import data_dir


def load_task(folder: Path, split: str):
    corpus = {}
    with (folder / "corpus.jsonl").open() as fh:
        for line in fh:
            d = json.loads(line)
            corpus[d["_id"]] = (d.get("title") or "", d["text"])
    with (folder / "queries.jsonl").open() as fh:
        queries = {(q := json.loads(line))["_id"]: q["text"] for line in fh}
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with (folder / "qrels" / f"{split}.tsv").open() as fh:
        for i, line in enumerate(fh):
            qid, did, score = line.rstrip("\n").split("\t")[:3]
            if i == 0 and not score.lstrip("-").isdigit():
                continue
            if int(score) > 0:
                qrels[qid][did] = int(score)
    return corpus, queries, dict(qrels)


def _copied_run(query: str, text: str) -> float:
    q, w = _words(query), _words(text)
    if not q:
        return 0.0
    return SequenceMatcher(None, q, w, autojunk=False).find_longest_match(0, len(q), 0, len(w)).size / len(q)


def _describe(label: str, pairs: list[tuple[str, str]]) -> None:
    ov = [word_overlap(q, [t]) for q, t in pairs]
    run = [_copied_run(q, t) for q, t in pairs]
    words = [len(_words(q)) for q, _ in pairs]
    print(f"{label}: {len(pairs)} queries, content words in the passage {statistics.mean(ov):.2f} "
          f"(median {statistics.median(ov):.2f}), longest copied run {statistics.mean(run):.2f} of the query, "
          f"median {statistics.median(words):.0f} words")


def overlap(args, corpus, queries, qrels) -> None:
    import datasets

    _describe(f"real {args.split} queries", [(queries[q], corpus[next(iter(d))][1]) for q, d in qrels.items()])
    for run in args.runs:
        ds = datasets.load_from_disk(str(Path(run) / "stages/generate/queries"))
        _describe(run, [(r["query"], " ".join(r["hop_contexts"])) for r in ds])


def _encoder(path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu")


def _per_query_ndcg(model, corpus, queries, qrels) -> dict[str, float]:
    import numpy as np

    ids = list(corpus)
    docs = model.encode([f"{t} {x}".strip() for t, x in corpus.values()], batch_size=64,
                        normalize_embeddings=True, show_progress_bar=False)
    qids = sorted(qrels)
    q = model.encode([queries[i] for i in qids], batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    top = np.argsort(-(q @ docs.T), axis=1)[:, :10]
    return {qid: ndcg_at_k([ids[j] for j in top[i]], qrels[qid], 10) for i, qid in enumerate(qids)}


def _base_path() -> str:
    from trainer.models import resolve_model

    return str(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))


def coverage(args, corpus, queries, qrels) -> None:
    import datasets

    run = Path(args.runs[0])
    seen = {d for r in datasets.load_from_disk(str(run / "stages/generate/queries")) for d in r["positive_doc_ids"]}
    base = _per_query_ndcg(_encoder(_base_path()), corpus, queries, qrels)
    tuned = _per_query_ndcg(_encoder(str(run / "stages/train/model")), corpus, queries, qrels)
    covered = {q for q in qrels if set(qrels[q]) & seen}
    for label, group in (("relevant document in the generation sample", covered),
                         ("not in the sample", set(qrels) - covered), ("all", set(qrels))):
        b = 100 * statistics.mean(base[q] for q in group)
        t = 100 * statistics.mean(tuned[q] for q in group)
        print(f"{label}: {len(group)} queries, base {b:.2f}, tuned {t:.2f}, delta {t - b:+.2f}")
    print(f"({len(seen)} documents had queries written)")


def soup(args, corpus, queries, qrels) -> None:
    model = _encoder(_base_path())
    base = {k: v.clone() for k, v in model.state_dict().items()}
    parts = []
    for spec in args.runs:
        name, _, weight = spec.rpartition(":") if ":" in spec else (spec, "", "")
        w = float(weight) if weight else 1.0 / len(args.runs)
        parts.append((base if name == "base" else _encoder(str(Path(name) / "stages/train/model")).state_dict(), w))
    mixed = {k: (sum(sd[k] * w for sd, w in parts) if v.is_floating_point() else v) for k, v in base.items()}
    model.load_state_dict(mixed)
    scores = _per_query_ndcg(model, corpus, queries, qrels)
    print(f"soup {' + '.join(args.runs)}: nDCG@10 {100 * statistics.mean(scores.values()):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["overlap", "coverage", "soup"])
    ap.add_argument("runs", nargs="+", help="run directories (soup: RUN[:WEIGHT] or base:WEIGHT)")
    ap.add_argument("--task", default=None, help="BEIR folder (default: <data dir>/scifact)")
    ap.add_argument("--split", default="train")
    args = ap.parse_args()
    corpus, queries, qrels = load_task(Path(args.task) if args.task else data_dir() / "scifact", args.split)
    {"overlap": overlap, "coverage": coverage, "soup": soup}[args.what](args, corpus, queries, qrels)


if __name__ == "__main__":
    main()
