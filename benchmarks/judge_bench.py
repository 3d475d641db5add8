"""Does the LLM judge separate good queries from bad ones? Checked on a labelled sample.

Good pairs: SciFact TRAINING claims with their relevant abstract (qrels/train.tsv, never the test
split). Bad pairs: the same claims with a random other abstract (a query the text does not support).
Prints the mean overall score of each group and the AUC (chance 0.5).

    python benchmarks/judge_bench.py --n 20 --generator qwen2.5-coder-0.5b-instruct-q4_k_m
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from trainer.beir import doc_text, load_beir
from trainer.generate import parse_judge, response_format
from trainer.llm_client import ChatClient
from trainer.llm_server import LocalLLMServer
from trainer.models import resolve_generator
from trainer.paths import data_path
from trainer.prompts import JUDGE_SCHEMA, judge_messages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--generator", default="qwen2.5-coder-0.5b-instruct-q4_k_m")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    folder = data_path("scifact")
    data = load_beir(folder, "train")  # SciFact's training claims: never the test split
    corpus = {i: doc_text(d) for i, d in data.corpus.items()}
    queries = data.queries
    pairs = [(q, d) for q, rels in data.qrels.items() for d in rels]
    rng = random.Random(0)
    rng.shuffle(pairs)
    ids = list(corpus)
    sample = pairs[: args.n]

    scores = {"good": [], "bad": []}
    unparsed = 0
    t = time.perf_counter()
    with LocalLLMServer(resolve_generator(args.generator), n_threads=args.threads) as srv:
        client = ChatClient(srv.base_url, max_retries=1)
        fmt = response_format("llama.cpp", JUDGE_SCHEMA)
        for qid, did in sample:
            other = rng.choice([i for i in ids if i != did][:5000])
            for label, doc in (("good", did), ("bad", other)):
                raw = client.chat(judge_messages("scientific", queries[qid], [corpus[doc][:2000]]),
                                  max_tokens=96, temperature=0.0, response_format=fmt)
                parsed = parse_judge(raw)
                if parsed is None:
                    unparsed += 1
                    continue
                scores[label].append(parsed["overall"])
    minutes = (time.perf_counter() - t) / 60
    good, bad = scores["good"], scores["bad"]
    wins = sum((g > b) + 0.5 * (g == b) for g in good for b in bad)
    auc = wins / (len(good) * len(bad)) if good and bad else float("nan")
    print(json.dumps({
        "judge": args.generator, "pairs": len(sample), "unparsed": unparsed, "minutes": round(minutes, 2),
        "good_mean": round(statistics.mean(good), 2) if good else None,
        "bad_mean": round(statistics.mean(bad), 2) if bad else None,
        "good_scores": good, "bad_scores": bad, "auc": round(auc, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
