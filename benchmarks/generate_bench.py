"""Generation runtimes on SciFact abstracts: queries per minute and a quality sample.

Runs the real generate stage (one factual query per abstract, first chunk of N sampled documents)
against a runtime and prints JSON: minutes, queries/min, how many outputs survived validation and the
easiness filter, and sample queries with their passages.

    python benchmarks/generate_bench.py --runtime llama.cpp --n 50
    python benchmarks/generate_bench.py --runtime transformers-serve --n 10   # needs transformers[serving], gguf

``llama.cpp`` is the embedded server (llama-cpp-python). ``transformers-serve`` dequantizes the same
GGUF into a transformers folder once (fp32) and serves it with ``transformers serve``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from trainer.config import load_config
from trainer.files import free_port
from trainer.models import cache_dir, resolve_generator
from trainer.pipeline import output_path, run_pipeline


def hf_folder_from_gguf(gguf: Path) -> Path:
    """transformers loads GGUF by dequantizing it; keep the result as a normal model folder."""
    out = cache_dir() / "hf-from-gguf" / gguf.stem
    if (out / "config.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def start_transformers_serve(folder: Path, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("HF_HUB_OFFLINE", None)  # transformers serve refuses local paths offline in some versions
    proc = subprocess.Popen(
        [sys.executable, "-m", "transformers.commands.transformers_cli", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--force_model", str(folder), "--dtype", "float32"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/health", timeout=2).close()
            return proc, url
        except OSError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError("transformers serve did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime", choices=["llama.cpp", "transformers-serve"], default="llama.cpp")
    ap.add_argument("--generator", default="qwen2.5-coder-0.5b-instruct-q4_k_m")
    ap.add_argument("--task", default="data:scifact")
    ap.add_argument("--domain", default="scientific")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--run-dir", default=None)
    args = ap.parse_args()

    overrides = [
        f"ingest.source={args.task}", f"domain={args.domain}", f"generate.generator={args.generator}",
        f"generate.sample_documents={args.n}", "generate.max_chunks_per_document=1",
        "generate.questions_per_chunk=1", f"generate.server_threads={args.threads}", "generate.concurrency=1",
        "generate.dedupe_similarity=1.0",
    ]
    proc = None
    if args.runtime == "transformers-serve":
        folder = hf_folder_from_gguf(resolve_generator(args.generator))
        t = time.perf_counter()
        proc, url = start_transformers_serve(folder, args.threads)
        print(f"transformers serve up in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        overrides += [f"generate.endpoint={url}", f"generate.model={folder}", "generate.structured_output=off",
                      "generate.judge=off"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = args.run_dir or tmp
            cfg = load_config(None, [*overrides, f"run.dir={run_dir}"])
            run_pipeline(cfg, to="ingest")
            t = time.perf_counter()
            counts = run_pipeline(cfg, to="generate")[-1].manifest["counts"]
            minutes = (time.perf_counter() - t) / 60
            import datasets

            qs = datasets.load_from_disk(str(output_path(run_dir, "generate", "queries"))).to_list()
            rejected_file = output_path(run_dir, "generate", "rejected.jsonl")
            rejected = [json.loads(x) for x in rejected_file.read_text().splitlines()]
    finally:
        if proc is not None:
            proc.kill()
    print(json.dumps({
        "runtime": args.runtime, "generator": args.generator, "threads": args.threads,
        "documents": args.n, "requests": counts["llm_calls"], "minutes": round(minutes, 2),
        "outputs_per_min": round(counts["tasks_done"] / minutes, 1),
        "kept_queries": counts["queries"], "kept_per_min": round(counts["queries"] / minutes, 1),
        "rejected_by_reason": counts["rejected_by_reason"],
        "samples": [{"query": q["query"], "passage": " ".join(q["hop_contexts"][0].split())[:160]}
                    for q in qs[: args.samples]],
        "rejected_samples": [{"reason": r["reason"], "query": r["query"][:160]} for r in rejected[:5]],
    }, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
