"""Hard-negative mining: the mine stage (hybrid, dense, bm25) against sentence-transformers'
``mine_hard_negatives(relative_margin=0.05, sampling_strategy="top")`` (NV-Retriever's TopK-PercPos
95%, the same guard as ``mine.margin=0.95``) on the same queries and passages, in one process.

Data: SciFact's real TRAIN queries (qrels/train.tsv; never test.tsv) stand in for synthetic queries;
each maps to every chunk of its positive documents. The corpus is the positive documents plus a
seeded sample of the others, up to --max-docs (all 5183 with --max-docs 0), ingested and chunked by
the ingest stage. ``mine.test_fraction=0`` so every query is mined by both. Each timed run includes
loading the model and embedding every passage and query (nothing cached between runs).

    HF_HUB_OFFLINE=1 python benchmarks/mine_bench.py --max-docs 500 --max-queries 200 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from trainer import ingest, mine
from trainer.beir import load_qrels, read_jsonl
from trainer.config import load_config
from trainer.models import resolve_model
from trainer.paths import data_dir
from trainer.pipeline import output_path
from trainer.rundir import Input, RunDir, Stage, run_stage


def build_subset(src: Path, dest: Path, max_docs: int, max_queries: int, seed: int) -> dict[str, list[str]]:
    """A BEIR folder with the chosen train queries' positive documents plus sampled others;
    returns {query_id: [positive doc ids]}."""
    qrels = {q: [d for d, v in rels.items() if v > 0] for q, rels in load_qrels(src / "qrels" / "train.tsv").items()}
    chosen = sorted(qrels, key=int)
    if max_queries:
        chosen = sorted(random.Random(seed).sample(chosen, min(max_queries, len(chosen))), key=int)
    corpus = list(read_jsonl(src / "corpus.jsonl"))
    positive_docs = {d for q in chosen for d in qrels[q]}
    others = [d["_id"] for d in corpus if d["_id"] not in positive_docs]
    n_fill = max(0, max_docs - len(positive_docs)) if max_docs else len(others)
    keep = positive_docs | set(random.Random(seed).sample(others, min(n_fill, len(others))))
    dest.mkdir(parents=True)
    with (dest / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for d in corpus:
            if d["_id"] in keep:
                fh.write(json.dumps(d) + "\n")
    return {q: qrels[q] for q in chosen}


def queries_stage(rows: list[dict]) -> Stage:
    def run(ctx):
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(ctx.dir / "queries"))
        return {"queries": len(rows)}

    return Stage(name="generate", run=run, sections=("generate",), reads=(Input("ingest", "chunks"),),
                 writes=("queries",), version="bench")


def run_ours(cfg, rd: RunDir) -> tuple[float, dict]:
    t = time.perf_counter()
    outcome = run_stage(mine.STAGE, cfg, rd, force=True)
    elapsed = time.perf_counter() - t
    stats = json.loads(output_path(rd.root, "mine", "stats.json").read_text())
    c = outcome.manifest["counts"]
    found = stats["negatives_found_per_query"]
    per_query = [int(n) for n, count in found.items() for _ in range(count)]
    return elapsed, {
        "queries": c["queries_train"], "rows": c["train_rows"], "queries_skipped": c["queries_short"],
        "rows_skipped": c["rows_dropped_short"], "negatives_per_query_median": statistics.median(per_query),
        "negatives_per_query_mean": round(statistics.fmean(per_query), 3),
        "negative_sources": stats["negative_sources"],
    }


def run_st(cfg, pairs, corpus, k: int) -> tuple[float, dict, object]:
    import datasets
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    t = time.perf_counter()
    model = SentenceTransformer(resolve_model(cfg.model.name))
    out = mine_hard_negatives(
        datasets.Dataset.from_list(pairs), model, corpus=corpus, relative_margin=0.05, num_negatives=k,
        sampling_strategy="top", output_format="n-tuple", batch_size=cfg.mine.batch_size, use_faiss=False,
        verbose=False,
    )
    elapsed = time.perf_counter() - t
    anchors = {p["anchor"] for p in pairs}
    mined = set(out["anchor"])
    per_query = [k if a in mined else 0 for a in anchors]  # n-tuple output keeps only rows with k negatives
    return elapsed, {
        "queries": len(anchors), "rows": len(out), "queries_skipped": len(anchors - mined),
        "rows_skipped": len(pairs) - len(out), "negatives_per_query_median": statistics.median(per_query),
        "negatives_per_query_mean": round(statistics.fmean(per_query), 3),
    }, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-docs", type=int, default=500, help="corpus size in documents; 0: all")
    ap.add_argument("--max-queries", type=int, default=200, help="train queries; 0: all")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-negatives", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    src = data_dir() / "scifact"
    tmp = Path(tempfile.mkdtemp(prefix="mine-bench-"))
    qrels = build_subset(src, tmp / "beir", args.max_docs, args.max_queries, args.seed)
    texts = {q["_id"]: q["text"] for q in read_jsonl(src / "queries.jsonl")}
    base = [f"run.dir={tmp / 'run'}", f"ingest.source={tmp / 'beir'}", "mine.test_fraction=0",
            f"mine.num_negatives={args.num_negatives}"]
    cfg = load_config(None, base)
    rd = RunDir(cfg.run.dir)
    run_stage(ingest.STAGE, cfg, rd)
    import datasets

    chunks = datasets.load_from_disk(str(output_path(rd.root, "ingest", "chunks")))
    by_doc: dict[str, list[int]] = {}
    for i, d in enumerate(chunks["doc_id"]):
        by_doc.setdefault(d, []).append(i)
    rows = [{"query_id": q, "query": texts[q], "type": "factual", "hops": 1,
             "positive_chunk_ids": [chunks[i]["chunk_id"] for d in docs for i in by_doc.get(d, [])],
             "positive_doc_ids": docs} for q, docs in qrels.items()]
    run_stage(queries_stage(rows), cfg, rd)
    passages = [mine.passage_text(t, x) for t, x in zip(chunks["title"], chunks["text"])]
    pid = {c: i for i, c in enumerate(chunks["chunk_id"])}
    pairs = [{"anchor": r["query"], "positive": passages[pid[c]]} for r in rows for c in r["positive_chunk_ids"]]

    methods = {f"mine[{m}]": m for m in ("hybrid", "dense", "bm25")}
    times: dict[str, list[float]] = {name: [] for name in [*methods, "st.mine_hard_negatives"]}
    counts: dict[str, dict] = {}
    st_out = None
    for _ in range(args.repeats):
        for name, mode in methods.items():
            elapsed, counts[name] = run_ours(load_config(None, [*base, f"mine.mode={mode}"]), rd)
            times[name].append(elapsed)
            if mode == "dense":
                ours_dense = datasets.load_from_disk(str(output_path(rd.root, "mine", "train")))
        elapsed, counts["st.mine_hard_negatives"], st_out = run_st(cfg, pairs, passages, args.num_negatives)
        times["st.mine_hard_negatives"].append(elapsed)

    # agreement of mine[dense] with mine_hard_negatives on queries both filled (same model, same margin)
    negs = [f"negative_{j}" for j in range(1, args.num_negatives + 1)]
    ours = {r["anchor"]: {r[n] for n in negs} for r in ours_dense}
    theirs = {r["anchor"]: {r[n] for n in negs} for r in st_out}
    both = set(ours) & set(theirs)
    overlap = statistics.fmean(len(ours[a] & theirs[a]) / args.num_negatives for a in both) if both else None

    print(json.dumps({
        "corpus": {"documents": len(set(chunks["doc_id"])), "chunks": len(chunks), "queries": len(rows),
                   "query_positive_pairs": len(pairs)},
        "repeats": args.repeats,
        "results": {name: {"time_s_median": round(statistics.median(ts), 2), "runs": [round(t, 2) for t in ts],
                           **counts[name]} for name, ts in times.items()},
        "dense_vs_st_negative_overlap": round(overlap, 3) if overlap is not None else None,
        "queries_filled_by_both": len(both),
    }, indent=2))


if __name__ == "__main__":
    main()
