"""Encode throughput and quality of every CPU inference candidate, and the embeddings API's latency.

Same run, same passages (SciFact's corpus, seeded sample; else --corpus), batch 32, candidates interleaved
round-robin so that load from other processes hits them alike; sentences/s is the median of --repeats
encodes of all passages:

- PyTorch fp32, and PyTorch bf16 when the CPU has avx512_bf16 or AMX (torch's own kernels);
- ONNX fp32 (sentence-transformers' export) and Optimum's graph optimization levels O1-O3 (O4 adds fp16
  mixed precision, which Optimum only supports on GPU: not run on a CPU);
- ONNX int8 dynamic quantization for this CPU (export_dynamic_quantized_onnx_model);
- ONNX int8 static quantization (optimum's ORTQuantizer, QDQ, min-max calibration on --calibration
  passages of the same corpus, kept apart from the timed ones);
- OpenVINO fp32 (sentence-transformers' backend="openvino") and OpenVINO int8 static (NNCF through
  optimum-intel's OVQuantizer, calibrated on the same --calibration passages), exported as the export stage
  does it (trainer.export.export_openvino), when requirements-openvino.txt is installed; else recorded as
  not run, with the reason.

The report (printed, and written to --json, default benchmarks/results/export_bench-<cpu>.json) records the
CPU: model name, core count, the flags that decide the winner (VNNI, bf16, AMX) and the full flag list.

Quality: min cosine vs PyTorch fp32 on the timed passages for every candidate, and nDCG@10 on a SciFact
test sub-sample (--ndcg-queries/--ndcg-corpus) for the lossy ones (bf16, int8) and PyTorch. Then the
export stage's rule (trainer.export.choose_backend: fastest candidate passing parity, else PyTorch) is
applied to these numbers, and ``python -m trainer.serve`` (fp32, then int8) answers --requests sequential
POST /v1/embeddings calls with one short query (p50/p95 latency).

    python benchmarks/export_bench.py --passages 300 --repeats 5
    pip install -r requirements-openvino.txt   # first, to include OpenVINO
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from trainer.config import load_config
from trainer.export import (
    PYTORCH,
    Candidate,
    choose_backend,
    cosines,
    cpu_features,
    cpu_flags,
    cpu_name,
    export_onnx,
    export_openvino,
    int8_file_name,
    load_bf16,
    load_onnx,
    load_openvino,
    load_retrieval_task,
    openvino_unavailable,
    parity_passages,
    pick_int8_config,
    retrieval_ndcg,
)
from trainer.models import resolve_model
from trainer.paths import data_path
from trainer.serve import EmbeddingServer

QUERY = "Does vitamin D supplementation reduce fracture risk?"
TORCH = "PyTorch fp32"
MIN_COSINE, MAX_NDCG_DROP = 0.999, 0.5  # the export stage's defaults (export.min_cosine, export.max_ndcg_drop)
RESULTS = Path(__file__).resolve().parent / "results"


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


def export_static_int8(out: Path, calibration: list[str], tokenizer: Any, config: str, max_length: int) -> str:
    """Static int8 (QDQ) of out/onnx/model.onnx with min-max ranges from ``calibration``; returns its file."""
    import datasets
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoCalibrationConfig, AutoQuantizationConfig

    quantizer = ORTQuantizer.from_pretrained(out / "onnx", file_name="model.onnx")
    qconfig = getattr(AutoQuantizationConfig, config)(is_static=True, per_channel=False)
    enc = tokenizer(calibration, truncation=True, max_length=max_length, padding="max_length")
    dataset = datasets.Dataset.from_dict({k: list(v) for k, v in enc.items()})
    ranges = quantizer.fit(dataset=dataset, calibration_config=AutoCalibrationConfig.minmax(dataset),
                           operators_to_quantize=qconfig.operators_to_quantize, batch_size=8,
                           onnx_augmented_model_name=out.parent / "augmented_model.onnx")  # not in the cwd
    suffix = f"qint8_static_{config}"
    quantizer.quantize(save_dir=out / "onnx", quantization_config=qconfig, calibration_tensors_range=ranges,
                       file_suffix=suffix)
    return f"onnx/model_{suffix}.onnx"


def load_candidates(model_dir: Path, out: Path, int8_config: str, calibration: list[str],
                    skipped: dict[str, str]) -> tuple[dict[str, Any], dict[str, str], float]:
    """Every candidate that could be built here (name -> model), their files, and the export seconds."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model, export_optimized_onnx_model

    started = time.perf_counter()
    files = {"ONNX fp32": export_onnx(model_dir, out, int8_config=int8_config)["fp32"]}
    onnx_fp32 = load_onnx(out, files["ONNX fp32"])
    for level in ("O1", "O2", "O3"):
        try:
            export_optimized_onnx_model(onnx_fp32, level, str(out))
            files[f"ONNX {level}"] = f"onnx/model_{level}.onnx"
        except Exception as exc:  # noqa: BLE001 -- reported in the table; the rest is measured
            skipped[f"ONNX {level}"] = f"{type(exc).__name__}: {str(exc)[:120]}"
    skipped["ONNX O4"] = "fp16 mixed precision: Optimum supports O4 on GPU only"
    export_dynamic_quantized_onnx_model(onnx_fp32, int8_config, str(out))
    files[f"ONNX int8 dynamic ({int8_config})"] = int8_file_name(int8_config)
    tokenizer = onnx_fp32.tokenizer
    try:
        files[f"ONNX int8 static ({int8_config})"] = export_static_int8(out, calibration, tokenizer, int8_config,
                                                                       onnx_fp32.max_seq_length)
    except Exception as exc:  # noqa: BLE001
        skipped[f"ONNX int8 static ({int8_config})"] = f"{type(exc).__name__}: {str(exc)[:160]}"
    ov_files: dict[str, str] = {}
    missing = openvino_unavailable(int8=True)
    if missing:
        skipped["OpenVINO fp32"] = skipped["OpenVINO int8 static"] = missing
    else:
        try:
            exported = export_openvino(model_dir, out, calibration=calibration)
            ov_files = {"OpenVINO fp32": exported["openvino"], "OpenVINO int8 static": exported["openvino_int8"]}
        except Exception as exc:  # noqa: BLE001 -- reported in the table; the rest is measured
            skipped["OpenVINO fp32"] = skipped["OpenVINO int8 static"] = f"{type(exc).__name__}: {str(exc)[:160]}"
    export_s = time.perf_counter() - started

    models: dict[str, Any] = {TORCH: SentenceTransformer(str(model_dir), device="cpu")}
    flags = cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16"}:
        models["PyTorch bf16"] = load_bf16(model_dir)
    else:
        skipped["PyTorch bf16"] = "no avx512_bf16 / amx_bf16 on this CPU"
    for name, file in files.items():
        models[name] = onnx_fp32 if file == files["ONNX fp32"] else load_onnx(out, file)
    for name, file in ov_files.items():
        models[name] = load_openvino(out, file)
    return models, {**files, **ov_files}, export_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--corpus", default=None, help="BEIR folder or .jsonl; default: data:scifact's corpus")
    ap.add_argument("--passages", type=int, default=300)
    ap.add_argument("--calibration", type=int, default=100, help="passages calibrating static int8")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ndcg-task", default="data:scifact", help="BEIR folder for nDCG@10 ('off' skips it)")
    ap.add_argument("--ndcg-queries", type=int, default=300)
    ap.add_argument("--ndcg-corpus", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--json", default=None, help="also write the report here (default: "
                    "benchmarks/results/export_bench-<cpu>.json; 'off' writes none)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    cfg = load_config(None, [f"export.parity_corpus={args.corpus}"] if args.corpus else [])
    texts, source = parity_passages(cfg, None, args.passages + args.calibration)
    passages, calibration = texts[: args.passages], texts[args.passages:]
    model_dir = resolve_model(args.model)
    int8_config = pick_int8_config()
    load_before = os.getloadavg()
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench" / "stages" / "export" / "onnx"
        models, files, export_s = load_candidates(model_dir, out, int8_config, calibration, skipped)
        tokenizer = models[TORCH].tokenizer
        n_tokens = [len(x) for x in tokenizer(passages, truncation=True, max_length=256)["input_ids"]]
        for m in models.values():  # warm-up
            m.encode(passages[: args.batch], batch_size=args.batch)
        runs: dict[str, list[float]] = {name: [] for name in models}
        emb: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            for _ in range(args.repeats):
                for name, m in models.items():
                    t = time.perf_counter()
                    got = m.encode(passages, batch_size=args.batch, convert_to_numpy=True)
                    runs[name].append(time.perf_counter() - t)
                    emb[name] = np.asarray(got, dtype=np.float32)
        torch_sps = len(passages) / statistics.median(runs[TORCH])
        results: dict[str, dict[str, Any]] = {}
        for name in models:
            sps = len(passages) / statistics.median(runs[name])
            results[name] = {"sentences_per_s": round(sps, 1), "vs_torch": round(sps / torch_sps, 2),
                             "min_cosine_vs_torch": round(float(cosines(emb[name], emb[TORCH]).min()), 6),
                             "runs_s": [round(s, 2) for s in runs[name]]}

        # retrieval quality of the lossy candidates (bf16, int8) against PyTorch fp32
        lossy = [n for n in models if n == TORCH or "bf16" in n or "int8" in n]
        task_info: dict[str, Any] = {"task": "off"}
        if args.ndcg_task != "off":
            folder = data_path(args.ndcg_task[5:]) if args.ndcg_task.startswith("data:") else Path(args.ndcg_task)
            task = load_retrieval_task(folder, "test", max_queries=args.ndcg_queries, max_corpus=args.ndcg_corpus)
            task_info = {"task": str(folder), "queries": len(task.queries), "corpus": len(task.corpus)}
            for name in lossy:
                results[name]["ndcg@10"] = round(retrieval_ndcg(models[name], task, batch_size=args.batch), 5)
            for name in lossy:
                results[name]["ndcg_drop_points"] = round(
                    (results[TORCH]["ndcg@10"] - results[name]["ndcg@10"]) * 100, 2)

        # the export stage's rule on these numbers (bf16/int8 by nDCG, the fp32 ones by cosine)
        def passes(name: str) -> tuple[bool, str]:
            r = results[name]
            if name in lossy:
                if "ndcg_drop_points" not in r:
                    return False, "not judged (no nDCG task)"
                return r["ndcg_drop_points"] <= MAX_NDCG_DROP, f"nDCG@10 drop {r['ndcg_drop_points']} points"
            return r["min_cosine_vs_torch"] >= MIN_COSINE, f"min cosine {r['min_cosine_vs_torch']}"

        candidates = [Candidate(PYTORCH, None, results[TORCH]["sentences_per_s"])] + [
            Candidate(name, files.get(name, ""), results[name]["sentences_per_s"], *passes(name))
            for name in models if name != TORCH]
        best, why = choose_backend(candidates)
        del models, emb
        api = {}
        if args.requests:
            for label, int8 in (("fp32", False), (f"int8 dynamic ({int8_config})", True)):
                with EmbeddingServer(out, int8=int8) as srv:
                    api[label] = latency(srv.base_url, args.requests, args.warmup)
    report = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "flags": cpu_features(),
                    "all_flags": sorted(cpu_flags()), "machine": platform.machine(),
                    "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "python": platform.python_version(), "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "passages": len(passages), "calibration_passages": len(calibration), "source": source,
        "mean_tokens": round(statistics.mean(n_tokens), 1), "batch": args.batch, "repeats": args.repeats,
        "export_s": round(export_s, 1), "ndcg": task_info, "results": results, "skipped": skipped,
        "stage_would_serve": {"name": best.name, "why": why}, "api_latency": api, "api_requests": args.requests,
    }
    text = json.dumps(report, indent=2)
    print(text)
    json_path = args.json or RESULTS / f"export_bench-{re.sub(r'[^a-z0-9]+', '-', cpu_name().lower()).strip('-')}.json"
    if args.json != "off":
        Path(json_path).write_text(text + "\n", encoding="utf-8")
        print(f"(written to {json_path})")
    print(f"\n| candidate ({len(passages)} passages, ~{report['mean_tokens']:.0f} tokens, batch {args.batch}, median "
          f"of {args.repeats}) | sentences/s | vs PyTorch fp32 | min cosine vs PyTorch | nDCG@10 (drop, points) |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        ndcg = f"{r['ndcg@10']:.4f} ({r['ndcg_drop_points']:+.2f})" if "ndcg@10" in r else "—"
        print(f"| {name} | {r['sentences_per_s']} | {r['vs_torch']:.2f}x | {r['min_cosine_vs_torch']:.6f} | {ndcg} |")
    for name, reason in skipped.items():
        print(f"| {name} | not run: {reason} | | | |")
    print(f"\nThe export stage's rule would serve: {why}")
    if api:
        print(f"\n| API, one short query ({args.requests} sequential requests after {args.warmup} warm-up) "
              "| p50 ms | p95 ms |")
        print("|---|---|---|")
        for label, r in api.items():
            print(f"| POST /v1/embeddings, {label} | {r['p50_ms']} | {r['p95_ms']} |")


if __name__ == "__main__":
    main()
