"""Encode throughput of PyTorch vs ONNX fp32 vs ONNX int8, and the embeddings API's latency.

Same run, same passages (SciFact's corpus, seeded sample; else --corpus), batch 32: sentences/s as the
median of --repeats encodes of all passages, backends interleaved round-robin so that load from other
processes hits them alike; min cosine vs PyTorch over the same passages. Then ``python -m
trainer.serve`` (fp32, then int8) on 127.0.0.1: p50/p95 latency of --requests sequential POST
/v1/embeddings calls with one short query, after --warmup calls.

    python benchmarks/export_bench.py --passages 500 --repeats 3 --requests 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from trainer.config import load_config
from trainer.export import cosines, cpu_flags, cpu_name, export_onnx, load_onnx, parity_passages, pick_int8_config
from trainer.models import resolve_model
from trainer.serve import EmbeddingServer

QUERY = "Does vitamin D supplementation reduce fracture risk?"


def latency(base_url: str, requests: int, warmup: int) -> dict[str, float]:
    times = []
    with httpx.Client(timeout=60) as http:
        for i in range(warmup + requests):
            t = time.perf_counter()
            r = http.post(f"{base_url}/embeddings", json={"input": QUERY, "encoding_format": "float"})
            elapsed = time.perf_counter() - t
            r.raise_for_status()
            if i >= warmup:
                times.append(elapsed * 1000)
    q = np.percentile(times, [50, 95])
    return {"p50_ms": round(float(q[0]), 2), "p95_ms": round(float(q[1]), 2),
            "mean_ms": round(statistics.mean(times), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--corpus", default=None, help="BEIR folder or .jsonl; default: data:scifact's corpus")
    ap.add_argument("--passages", type=int, default=500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    cfg = load_config(None, [f"export.parity_corpus={args.corpus}"] if args.corpus else [])
    passages, source = parity_passages(cfg, None, args.passages)
    model_dir = resolve_model(args.model)
    int8_config = pick_int8_config()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench" / "stages" / "export" / "onnx"
        t = time.perf_counter()
        files = export_onnx(model_dir, out, int8_config=int8_config)
        export_s = time.perf_counter() - t
        models = {
            "torch fp32": SentenceTransformer(str(model_dir), device="cpu"),
            "ONNX fp32": load_onnx(out, files["fp32"]),
            f"ONNX int8 ({int8_config})": load_onnx(out, files["int8"]),
        }
        tokenizer = models["torch fp32"].tokenizer
        n_tokens = [len(x) for x in tokenizer(passages, truncation=True, max_length=256)["input_ids"]]
        for m in models.values():  # warm-up
            m.encode(passages[: args.batch], batch_size=args.batch)
        runs: dict[str, list[float]] = {name: [] for name in models}
        emb: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for name, m in models.items():
                t = time.perf_counter()
                emb[name] = m.encode(passages, batch_size=args.batch, convert_to_numpy=True)
                runs[name].append(time.perf_counter() - t)
        throughput = {}
        torch_sps = len(passages) / statistics.median(runs["torch fp32"])
        for name in models:
            sps = len(passages) / statistics.median(runs[name])
            throughput[name] = {
                "sentences_per_s": round(sps, 1), "vs_torch": round(sps / torch_sps, 2),
                "min_cosine_vs_torch": round(float(cosines(emb[name], emb["torch fp32"]).min()), 6),
                "runs_s": [round(s, 2) for s in runs[name]],
            }
        del models
        api = {}
        for label, int8 in (("fp32", False), (f"int8 ({int8_config})", True)):
            with EmbeddingServer(out, int8=int8) as srv:
                api[label] = latency(srv.base_url, args.requests, args.warmup)
    report = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "avx512_vnni": "avx512_vnni" in cpu_flags(),
                    "python": platform.python_version(), "load_avg_before": [round(x, 1) for x in load_before],
                    "load_avg_after": [round(x, 1) for x in os.getloadavg()]},
        "passages": len(passages), "source": source, "mean_tokens": round(statistics.mean(n_tokens), 1),
        "batch": args.batch, "repeats": args.repeats, "export_s": round(export_s, 1),
        "throughput": throughput, "api_latency": api, "api_requests": args.requests,
    }
    print(json.dumps(report, indent=2))
    print(f"\n| backend ({len(passages)} passages, ~{report['mean_tokens']:.0f} tokens, batch {args.batch}, median of "
          f"{args.repeats}) | sentences/s | vs torch | min cosine vs torch |")
    print("|---|---|---|---|")
    for name, r in throughput.items():
        print(f"| {name} | {r['sentences_per_s']} | {r['vs_torch']:.2f}x | {r['min_cosine_vs_torch']:.6f} |")
    print(f"\n| API, one short query ({args.requests} sequential requests after {args.warmup} warm-up) "
          "| p50 ms | p95 ms |")
    print("|---|---|---|")
    for label, r in api.items():
        print(f"| POST /v1/embeddings, {label} | {r['p50_ms']} | {r['p95_ms']} |")


if __name__ == "__main__":
    main()
