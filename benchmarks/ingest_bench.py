"""Ingest throughput on a BEIR corpus: the full stage (read, dedupe, sentence split, tokenize, save)
against a baseline of only reading the corpus.jsonl in the same process. Medians of --repeats runs.

    python benchmarks/ingest_bench.py --task data:scifact --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from trainer.config import load_config
from trainer.pipeline import run_pipeline
from trainer.readers import resolve_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="data:scifact")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    cfg0 = load_config(None, [f"ingest.source={args.task}"])
    _, folder = resolve_source(cfg0.ingest)
    read_s, stage_s, counts = [], [], {}
    for _ in range(args.repeats):
        t = time.perf_counter()
        n = sum(1 for line in (Path(folder) / "corpus.jsonl").open() if json.loads(line)["text"])
        read_s.append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(None, [f"ingest.source={args.task}", f"run.dir={tmp}"])
            t = time.perf_counter()
            counts = run_pipeline(cfg, only="ingest")[0].manifest["counts"]
            stage_s.append(time.perf_counter() - t)
    med_read, med_stage = statistics.median(read_s), statistics.median(stage_s)
    print(json.dumps({
        "task": args.task, "documents": counts["documents"], "chunks": counts["chunks"], "docs_read": n,
        "read_only_s_median": round(med_read, 3), "ingest_s_median": round(med_stage, 2),
        "docs_per_s": round(counts["documents"] / med_stage, 1), "chunks_per_s": round(counts["chunks"] / med_stage, 1),
        "ingest_over_read_ratio": round(med_stage / med_read, 1), "runs": [round(s, 2) for s in stage_s],
    }, indent=2))


if __name__ == "__main__":
    main()
