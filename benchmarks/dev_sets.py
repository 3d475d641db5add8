"""Dev sets built without test data, for choosing settings on more than one task's query style.

    python benchmarks/dev_sets.py titles --task ../shared/data/scifact --out runs/devsets/scifact-titles

``titles``: a document's title is the query and its text, with the title removed, the one relevant
document (the corpus is every document, titles removed, so the title is never matched word for word).
Titles are short noun phrases ("Vitamin D deficiency and bone loss in elderly women"): the keyword-like
style of medical and web-search tasks, where SciFact's own dev split (its training claims) is one-sentence
claims. Only corpus.jsonl is read: no query or qrels file of the task, so no test query can reach it.
Writes a BEIR folder whose qrels/dev.tsv judges ``--n`` sampled titles (seeded). Score runs on it with
``benchmarks/e2e.py --dev train --also OUT:dev``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from trainer.beir import read_jsonl, write_beir


def titles(task: Path, out: Path, n: int, seed: int = 0, min_words: int = 3) -> dict[str, int]:
    corpus = _corpus(task)
    eligible = sorted(i for i, d in corpus.items() if len(d["title"].split()) >= min_words and d["text"].strip())
    picked = random.Random(seed).sample(eligible, min(n, len(eligible)))
    queries = {f"t{i}": corpus[i]["title"] for i in picked}
    qrels = {f"t{i}": {i: 1} for i in picked}
    stripped = {i: {"title": "", "text": d["text"]} for i, d in corpus.items() if d["text"].strip()}
    write_beir(out, stripped, queries, qrels, split="dev")
    return {"documents": len(stripped), "queries": len(queries)}


def _corpus(task: Path) -> dict[str, dict[str, str]]:
    return {str(r["_id"]): {"title": r.get("title") or "", "text": r.get("text") or ""}
            for r in read_jsonl(task / "corpus.jsonl")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("titles", help="title -> its own text (title removed), from corpus.jsonl only")
    t.add_argument("--task", required=True, type=Path)
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--n", type=int, default=800)
    t.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(titles(args.task.resolve(), args.out, args.n, args.seed))


if __name__ == "__main__":
    main()
