"""Training throughput of the cpu profile against baselines, in one process on the same rows.

Rows/s (pairs/s: training rows, each a query + positive + negatives) is the median over timed optimizer
steps after warm-up steps, through SentenceTransformerTrainer with the stage's own loss and sampler
(trainer.train.build_loss, NO_DUPLICATES). Rows are synthetic query/passage/negative triples whose
passages are ~110 tokens (like ~5-sentence chunks), so the sequence-length cap matters.

    python benchmarks/train_bench.py --steps 4 --warmup 1 --batch 16

Variants (same batch, same rows):
  cpu profile     max_seq_length 128, 3 negatives, MNRL + Matryoshka (train.profile=cpu)
  seq 256         the same at the model's full 256 tokens
  5 negatives     the cpu profile with the recipe's 5 negatives
  no Matryoshka   the cpu profile with plain MNRL
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_VOCABULARY = (
    "insulin glucose liver receptor patient dose therapy trial outcome risk cohort protein kinase pathway "
    "function variable module import class return value exception iterator buffer thread process memory "
    "court statute appeal contract clause liability plaintiff evidence ruling section provision"
)
WORDS = _VOCABULARY.split()


def synthetic_rows(n: int, negatives: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(words)) + "."

    rows = []
    for i in range(n):
        row = {"anchor": f"q{i} " + text(12), "positive": f"p{i} " + text(90)}
        row.update({f"negative_{j + 1}": f"n{i}-{j} " + text(90) for j in range(negatives)})
        rows.append(row)
    return rows


def measure(overrides: list[str], rows: list[dict], steps: int, warmup: int, batch: int) -> dict:
    import datasets
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )
    from transformers import PrinterCallback, TrainerCallback

    from trainer.config import load_config
    from trainer.models import resolve_model
    from trainer.train import build_loss

    cfg = load_config(None, ["train.profile=cpu", *overrides])
    t = cfg.train
    negs = t.num_negatives if t.num_negatives is not None else 5
    cols = ["anchor", "positive", *[f"negative_{j + 1}" for j in range(negs)]]
    ds = datasets.Dataset.from_list([{c: r[c] for c in cols} for r in rows[: batch * (steps + warmup)]])
    model = SentenceTransformer(resolve_model(cfg.model.name), device="cpu")
    model.max_seq_length = t.max_seq_length or model.max_seq_length

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp, per_device_train_batch_size=batch, max_steps=steps + warmup, learning_rate=t.lr,
            batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no", report_to="none", use_cpu=True,
            disable_tqdm=True, logging_steps=1000, seed=cfg.run.seed,
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=build_loss(model, t),
                                             callbacks=[Timer()])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    timed = times[warmup:]
    med = statistics.median(timed)
    return {"max_seq_length": model.max_seq_length, "negatives": negs, "matryoshka": bool(t.matryoshka_dims),
            "step_s_median": round(med, 2), "rows_per_s": round(batch / med, 2),
            "step_s": [round(x, 2) for x in timed]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()

    import torch

    rows = synthetic_rows(args.batch * (args.steps + args.warmup), negatives=5)
    variants = {
        "cpu profile (seq 128, 3 negatives, MNRL+Matryoshka)": [],
        "seq 256 (model's full length)": ["train.max_seq_length=256"],
        "5 negatives (recipe)": ["train.num_negatives=5"],
        "no Matryoshka (plain MNRL)": ["train.matryoshka_dims=[]"],
    }
    results = {name: measure(o, rows, args.steps, args.warmup, args.batch) for name, o in variants.items()}
    ref = results[next(iter(variants))]["rows_per_s"]
    print(json.dumps({"batch": args.batch, "torch_threads": torch.get_num_threads(), **results}, indent=2))
    print(f"\n| variant (batch {args.batch}, median of {args.steps} steps after {args.warmup} warm-up) "
          "| seq len | negatives | s/step | rows/s | vs cpu profile |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['max_seq_length']} | {r['negatives']} | {r['step_s_median']} | {r['rows_per_s']} "
              f"| {r['rows_per_s'] / ref:.2f}x |")


if __name__ == "__main__":
    main()
