"""The embedded server's prompt cache: the first call on a passage vs the same prompt asked again.

Asks three claims in a row per SciFact abstract (title + text) through ``ChatClient`` against the
embedded llama.cpp server and prints the median seconds of the first, second and third call.

    python benchmarks/prompt_cache_bench.py --n 12
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from trainer.llm_client import ChatClient
from trainer.llm_server import LocalLLMServer
from trainer.models import resolve_generator
from trainer.paths import data_dir
from trainer.prompts import QUERY_SCHEMA, query_messages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="abstracts")
    ap.add_argument("--generator", default="qwen2.5-coder-0.5b-instruct-q4_k_m")
    args = ap.parse_args()
    with (data_dir() / "scifact" / "corpus.jsonl").open() as fh:
        docs = [json.loads(line) for _, line in zip(range(args.n), fh, strict=False)]
    fmt = {"type": "json_object", "schema": QUERY_SCHEMA}
    times: list[list[float]] = [[], [], []]
    with LocalLLMServer(resolve_generator(args.generator)) as server:
        client = ChatClient(server.base_url, model="local", timeout=120, max_retries=1)
        client.chat(query_messages("scientific", "factual", ["warm-up"]), max_tokens=96, response_format=fmt)
        for doc in docs:
            messages = query_messages("scientific", "factual", [f"{doc['title']}\n{doc['text']}"])
            for i in range(3):
                start = time.perf_counter()
                client.chat(messages, max_tokens=96, temperature=0.7, seed=i + 1, response_format=fmt)
                times[i].append(time.perf_counter() - start)
    first, second, third = (statistics.median(t) for t in times)
    print(f"{args.generator}, {len(docs)} abstracts: median first call {first:.2f} s, second {second:.2f} s, "
          f"third {third:.2f} s (second/first {second / first:.2f})")


if __name__ == "__main__":
    main()
