"""End-to-end quality benchmark: the whole pipeline on a BEIR folder, scored on the task's real test
queries with mteb, base vs tuned.

    python benchmarks/e2e.py --task ../shared/data/scifact
    python benchmarks/e2e.py --task ../shared/data/aila_statutes --docs 1000

Generation runs over a seeded sample of ``--docs`` documents (the whole corpus is still used for
mining and evaluation). Settings come from ``--config`` (default configs/e2e-cpu.yaml) plus the
task's domain; ``--set key=value`` overrides them. Prints a summary, appends a section to
BENCHMARKS.md and writes benchmarks/results/e2e-<task>.json (mteb's 0-1 scale).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from trainer.config import load_config
from trainer.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
TASKS = {  # BEIR folder name -> (MTEB task, domain)
    "scifact": ("SciFact", "scientific"),
    "aila_casedocs": ("AILACasedocs", "legal"),
    "aila_statutes": ("AILAStatutes", "legal"),
    "legalbench_corporate_lobbying": ("LegalBenchCorporateLobbying", "legal"),
}
METRICS = ("ndcg_at_10", "recall_at_10", "mrr_at_10")


def _scores(run_dir: Path, task: str, revision: str) -> dict[str, float]:
    files = sorted((run_dir / "stages" / "evaluate" / "mteb").rglob(f"{revision}/{task}.json"))
    if not files:
        raise SystemExit(f"no mteb result for {task} ({revision}) under {run_dir}/stages/evaluate/mteb")
    data = json.loads(files[0].read_text())
    split = data["scores"].get("test") or next(iter(data["scores"].values()))
    return {m: float(split[0][m]) for m in METRICS}


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    ap.add_argument("--docs", type=int, default=1000, help="documents sampled for generation")
    ap.add_argument("--config", default=str(ROOT / "configs" / "e2e-cpu.yaml"))
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--no-append", action="store_true", help="do not append to BENCHMARKS.md")
    args = ap.parse_args()

    folder = Path(args.task).resolve()
    name = folder.name
    task, domain = TASKS.get(name, (None, None))
    if task is None:
        raise SystemExit(f"unknown task folder {name!r}; known: {', '.join(TASKS)}")
    run_dir = Path(args.run_dir or ROOT / "runs" / f"e2e-{name}")
    cfg = load_config(args.config, [
        f"domain={domain}", f"run.dir={run_dir}", f"ingest.source={folder}",
        f"generate.sample_documents={args.docs}", f"evaluate.tasks=[{task}]", *args.overrides,
    ])
    t0 = time.perf_counter()
    outcomes = run_pipeline(cfg, to="evaluate")
    wall = (time.perf_counter() - t0) / 60
    stages = {o.stage: o.manifest for o in outcomes}
    minutes = {s: round(m.get("duration_s", 0) / 60, 2) for s, m in stages.items()}
    base, tuned = _scores(run_dir, task, "base"), _scores(run_dir, task, "tuned")
    result = {
        "task": task,
        "folder": name,
        "base_model": cfg.model.name,
        "base_ndcg_at_10": base["ndcg_at_10"],
        "tuned_ndcg_at_10": tuned["ndcg_at_10"],
        "base": base,
        "tuned": tuned,
        "delta_ndcg_at_10_points": round(100 * (tuned["ndcg_at_10"] - base["ndcg_at_10"]), 2),
        "minutes_total": round(sum(minutes.values()), 2),
        "minutes_wall_this_invocation": round(wall, 2),
        "minutes_by_stage": minutes,
        "generator": stages["generate"]["counts"].get("generator"),
        "queries": stages["generate"]["counts"].get("queries"),
        "train_rows": stages["train"]["counts"].get("rows"),
        "settings": {k: cfg.pick(k)[k] for k in ("generate", "mine", "train")},
        "contamination": "the training corpus is the evaluation corpus (documents only; no test queries or qrels)",
        "commit": _commit(),
    }
    out = ROOT / "benchmarks" / "results" / f"e2e-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    line = (f"| {task} | {100 * base['ndcg_at_10']:.2f} | {100 * tuned['ndcg_at_10']:.2f} | "
            f"{result['delta_ndcg_at_10_points']:+.2f} | {100 * base['recall_at_10']:.2f} -> "
            f"{100 * tuned['recall_at_10']:.2f} | {100 * base['mrr_at_10']:.2f} -> {100 * tuned['mrr_at_10']:.2f} | "
            f"{result['minutes_total']:.1f} | {result['queries']} | {result['commit']} |")
    print(json.dumps(result, indent=2))
    print(line)
    if not args.no_append:
        with (ROOT / "BENCHMARKS.md").open("a", encoding="utf-8") as fh:
            fh.write(f"\n<!-- e2e {task} {time.strftime('%Y-%m-%d %H:%M')} -->\n{line}\n")


if __name__ == "__main__":
    main()
