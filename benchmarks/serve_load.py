"""Loopback load test of the embeddings server: do a few big requests starve the one-input ones?

``python -m trainer.serve`` (fp32) serves the base model exported to ONNX (into --export-dir, reused
when already there). --big requests of --big-inputs long texts (--big-chars characters each, past the
model's token limit) start together; --small-clients clients then send one-input requests back to
back (--pause between them) until the big requests are answered, --small requests were sent, or
--max-seconds passed. Printed: p50/p95/max latency of the small requests, each big request's time and
the server's resident memory before, right after the big requests, and --settle seconds later.
Everything is bounded: request count, a timeout on every request, a wall-clock limit.

    python benchmarks/serve_load.py --big 2 --big-inputs 600 --small 200 --small-clients 2 --max-seconds 300
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from trainer.serve import EmbeddingServer

QUERY = "Does vitamin D supplementation reduce fracture risk?"
WORDS = ["cell", "protein", "expression", "patients", "cohort", "trial", "receptor", "signaling", "mutation", "tumor",
         "dose", "risk", "gene", "therapy", "model", "response", "immune", "clinical", "mice", "pathway"]


def long_texts(n: int, chars: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < chars:
            words.append(rng.choice(WORDS))
        out.append(" ".join(words)[:chars])
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def exported_model(export_dir: Path | None) -> Path:
    folder = (export_dir or Path(tempfile.mkdtemp(prefix="serve-load-"))) / "onnx"
    if not (folder / "onnx" / "model.onnx").is_file():
        from trainer.export import export_onnx
        from trainer.models import resolve_model

        export_onnx(resolve_model("sentence-transformers/all-MiniLM-L6-v2", offline=True), folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export-dir", type=Path, default=None, help="where the exported model is (or goes)")
    ap.add_argument("--big", type=int, default=2, help="big requests, sent together")
    ap.add_argument("--big-inputs", type=int, default=600)
    ap.add_argument("--big-chars", type=int, default=4000)
    ap.add_argument("--small", type=int, default=200, help="most one-input requests")
    ap.add_argument("--small-clients", type=int, default=2)
    ap.add_argument("--pause", type=float, default=0.1, help="seconds between a client's small requests")
    ap.add_argument("--max-seconds", type=float, default=300, help="wall-clock limit of the load phase")
    ap.add_argument("--settle", type=float, default=5, help="idle seconds before the last memory reading")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    model = exported_model(args.export_dir)
    big_texts = long_texts(args.big_inputs, args.big_chars, seed=0)
    with EmbeddingServer(model) as server:
        url = f"{server.base_url}/embeddings"
        pid = server.proc.pid  # type: ignore[union-attr]
        with httpx.Client(timeout=60) as http:  # warm up: first-call allocations are not the load's
            for _ in range(5):
                http.post(url, json={"input": QUERY}).raise_for_status()
        rss_before = rss_mb(pid)
        deadline = time.monotonic() + args.max_seconds
        big_times: list[float] = []
        small_times: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()
        bigs_done = threading.Event()
        sent = [0]

        def big(i: int) -> None:
            t = time.perf_counter()
            try:
                with httpx.Client(timeout=args.max_seconds) as http:
                    r = http.post(url, json={"input": big_texts, "encoding_format": "base64"})
                    r.raise_for_status()
                with lock:
                    big_times.append(time.perf_counter() - t)
            except httpx.HTTPError as exc:
                with lock:
                    failures.append(f"big {i}: {type(exc).__name__}")

        def small() -> None:
            with httpx.Client(timeout=args.max_seconds) as http:
                while not bigs_done.is_set() and time.monotonic() < deadline:
                    with lock:
                        if sent[0] >= args.small:
                            return
                        sent[0] += 1
                    t = time.perf_counter()
                    try:
                        http.post(url, json={"input": QUERY}).raise_for_status()
                    except httpx.HTTPError as exc:
                        with lock:
                            failures.append(f"small: {type(exc).__name__}")
                        return
                    with lock:
                        small_times.append(time.perf_counter() - t)
                    time.sleep(args.pause)

        started = time.perf_counter()
        bigs = [threading.Thread(target=big, args=(i,)) for i in range(args.big)]
        for t in bigs:
            t.start()
        time.sleep(0.5)  # the big requests are in the server's hands first
        smalls = [threading.Thread(target=small) for _ in range(args.small_clients)]
        for t in smalls:
            t.start()
        for t in bigs:
            t.join()
        bigs_done.set()
        rss_after = rss_mb(pid)
        for t in smalls:
            t.join()
        wall = time.perf_counter() - started
        time.sleep(args.settle)
        rss_settled = rss_mb(pid)

    q = np.percentile(small_times, [50, 95]) if small_times else [float("nan")] * 2
    result = {
        "small_requests": len(small_times), "small_p50_s": round(float(q[0]), 3),
        "small_p95_s": round(float(q[1]), 3), "small_max_s": round(max(small_times, default=float("nan")), 3),
        "big_requests_s": [round(t, 1) for t in sorted(big_times)], "wall_s": round(wall, 1),
        "rss_mb": {"before": rss_before, "after_big": rss_after, "settled": rss_settled},
        "failures": failures, "cpus": os.cpu_count(),
        "workload": {k: v for k, v in vars(args).items() if k != "export_dir"},
    }
    print(json.dumps(result))
    print(f"small requests: {len(small_times)}, p50 {result['small_p50_s']} s, p95 {result['small_p95_s']} s, "
          f"max {result['small_max_s']} s; big requests: {result['big_requests_s']} s; "
          f"server RSS {rss_before} -> {rss_after} -> {rss_settled} MB (settled)")


if __name__ == "__main__":
    main()
