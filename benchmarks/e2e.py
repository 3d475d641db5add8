"""End-to-end quality benchmark: the whole pipeline on a BEIR folder, scored on the task's real test
queries with mteb, base vs tuned.

    python benchmarks/e2e.py --task ../shared/data/scifact
    python benchmarks/e2e.py --task ../shared/data/aila_statutes --docs 1000

Generation runs over a seeded sample of ``--docs`` documents (the whole corpus is still used for
mining and evaluation). Settings come from ``--config`` (default configs/e2e-cpu.yaml) plus the
task's domain; ``--set key=value`` overrides them. Prints a summary, appends a section to
BENCHMARKS.md and writes benchmarks/results/e2e-<task>.json (mteb's 0-1 scale).

Choosing settings (ablations) happens on a dev split, never on the test queries:

    python benchmarks/e2e.py --task ../shared/data/scifact --dev train --label lr5e-5 \\
        --reuse runs/e2e-scifact --set train.lr=5e-5

``--dev SPLIT`` scores base and tuned on the folder's ``qrels/SPLIT.tsv`` (SciFact's real training
queries) with the project's own BEIR metrics, runs no MTEB task, and writes
benchmarks/results/dev/<task>-<label>.json. ``--reuse RUN`` copies the ingest, generate and mine stages (and
the LLM response cache) of an earlier run, so that an ablation of mining or training does not pay for
generation again; stage keys still decide: a changed setting re-runs its stage (the copy is archived).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

from trainer.config import load_config
from trainer.pipeline import output_path, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
TASKS = {  # BEIR folder name -> (MTEB task, domain)
    "scifact": ("SciFact", "scientific"),
    "aila_casedocs": ("AILACasedocs", "legal"),
    "aila_statutes": ("AILAStatutes", "legal"),
    "legalbench_corporate_lobbying": ("LegalBenchCorporateLobbying", "legal"),
}
METRICS = ("ndcg_at_10", "recall_at_10", "mrr_at_10")
REUSED = ("stages/ingest", "stages/generate", "stages/mine", "cache")
HYPER = ("generate.generator", "generate.questions_per_chunk", "generate.query_types",
         "generate.max_chunks_per_document", "mine.mode", "mine.num_negatives", "mine.margin", "mine.test_fraction",
         "train.loss", "train.hard_negatives_only", "train.num_negatives", "train.temperature", "train.lr",
         "train.epochs", "train.max_seq_length", "train.batch_size", "train.val_fraction")


def _mteb_scores(run_dir: Path, task: str, revision: str) -> dict[str, float]:
    files = sorted(output_path(run_dir, "evaluate", "mteb").rglob(f"{revision}/{task}.json"))
    if not files:
        raise SystemExit(f"no mteb result for {task} ({revision}) under {run_dir}/stages/evaluate/mteb")
    data = json.loads(files[0].read_text())
    split = data["scores"].get("test") or next(iter(data["scores"].values()))
    return {m: float(split[0][m]) for m in METRICS}


def _dev_scores(run_dir: Path) -> tuple[dict[str, float], dict[str, float], int]:
    data = json.loads(output_path(run_dir, "evaluate", "beir.json").read_text())
    pick = lambda who: {m: float(data[who][m]) for m in METRICS}  # noqa: E731
    return pick("base"), pick("tuned"), int(data["n_queries"])


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(  # the code and configs; what this script itself writes does not count
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!BENCHMARKS.md", ":!benchmarks/results"],
        cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def reuse_generation(source: Path, run_dir: Path) -> list[str]:
    """Copy (hard-link where possible) ``source``'s ingest, generate and mine stages and LLM cache into ``run_dir``."""
    copied = []
    for rel in REUSED:
        src, dst = source / rel, run_dir / rel
        if not src.exists() or dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        # stage outputs are never written in place: hard links; the LLM cache is appended to: a copy
        shutil.copytree(src, dst, copy_function=_link_or_copy if rel.startswith("stages/") else shutil.copy2)
        copied.append(rel)
    return copied


def _link_or_copy(src: str, dst: str) -> None:
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)


def score_also(cfg, run_dir: Path, specs: list[str]) -> dict[str, dict]:
    """Base and tuned on further dev folders (``FOLDER:SPLIT``), the project's metrics, in points."""
    from trainer.evaluate import compare_on_beir
    from trainer.models import cache_dir as user_cache_dir
    from trainer.retrieval import load_model

    base, tuned = load_model(cfg.model.name), load_model(output_path(run_dir, "train", "model"))
    out = {}
    for spec in specs:
        folder, _, split = spec.rpartition(":")
        r = compare_on_beir(base, tuned, Path(folder), split=split or "dev",
                            base_cache_dir=user_cache_dir() / "embeddings")
        pts = {w: {m: round(100 * float(r[w][m]), 2) for m in METRICS} for w in ("base", "tuned")}
        out[Path(folder).name] = {**pts, "n_queries": r["n_queries"],
                                  "delta_ndcg_at_10_points": round(pts["tuned"]["ndcg_at_10"]
                                                                   - pts["base"]["ndcg_at_10"], 2)}
        print(f"{Path(folder).name}: {pts['base']['ndcg_at_10']} -> {pts['tuned']['ndcg_at_10']} "
              f"({out[Path(folder).name]['delta_ndcg_at_10_points']:+.2f}, {r['n_queries']} queries)")
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    ap.add_argument("--docs", type=int, default=1000, help="documents sampled for generation")
    ap.add_argument("--config", default=str(ROOT / "configs" / "e2e-cpu.yaml"))
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--dev", metavar="SPLIT", default=None,
                    help="score on qrels/SPLIT.tsv with the project's metrics instead of mteb's test split")
    ap.add_argument("--also", metavar="FOLDER:SPLIT", action="append", default=[],
                    help="with --dev: score base and tuned on this BEIR folder's split too (a second dev set, e.g. "
                         "benchmarks/dev_sets.py titles)")
    ap.add_argument("--label", default="default", help="name of this variant (dev results, run dir)")
    ap.add_argument("--reuse", metavar="RUN", default=None, help="copy ingest, generate and mine from this run dir")
    ap.add_argument("--no-append", action="store_true", help="do not append to BENCHMARKS.md")
    args = ap.parse_args()

    folder = Path(args.task).resolve()
    name = folder.name
    task, domain = TASKS.get(name, (None, None))
    if task is None:
        raise SystemExit(f"unknown task folder {name!r}; known: {', '.join(TASKS)}")
    if args.dev and not (folder / "qrels" / f"{args.dev}.tsv").is_file():
        raise SystemExit(f"--dev {args.dev}: {folder}/qrels/{args.dev}.tsv does not exist")
    suffix = "" if args.label == "default" else f"-{args.label}"
    run_dir = Path(args.run_dir or ROOT / "runs" / f"e2e-{name}{'-dev' if args.dev else ''}{suffix}")
    if args.reuse:
        copied = reuse_generation(Path(args.reuse).resolve(), run_dir)
        print(f"reused from {args.reuse}: {', '.join(copied) or 'nothing (already there)'}")
    evaluation = (["evaluate.tasks=[]", f"evaluate.beir_dir={folder}", f"evaluate.beir_split={args.dev}"]
                  if args.dev else [f"evaluate.tasks=[{task}]"])
    cfg = load_config(args.config, [
        f"domain={domain}", f"run.dir={run_dir}", f"ingest.source={folder}",
        f"generate.sample_documents={args.docs}", *evaluation, *args.overrides,
    ])
    t0 = time.perf_counter()
    outcomes = run_pipeline(cfg, to="evaluate")
    wall = (time.perf_counter() - t0) / 60
    stages = {o.stage: o.manifest for o in outcomes}
    minutes = {s: round(m.get("duration_s", 0) / 60, 2) for s, m in stages.items()}
    if args.dev:
        base, tuned, n_queries = _dev_scores(run_dir)
    else:
        base, tuned = _mteb_scores(run_dir, task, "base"), _mteb_scores(run_dir, task, "tuned")
        n_queries = None
    hyper = {k: v for key in HYPER for k, v in cfg.pick(key).items()}
    result = {
        "task": task,
        "folder": name,
        "split": args.dev or "test",
        "label": args.label,
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
        "hyperparameters": hyper,
        "settings": {k: cfg.pick(k)[k] for k in ("generate", "mine", "train")},
        "contamination": "the training corpus is the evaluation corpus (documents only; no test queries or qrels)",
        "commit": _commit(),
    }
    if n_queries is not None:
        result["dev_queries"] = n_queries
    if args.also:
        result["also"] = score_also(cfg, run_dir, args.also)
    if args.dev:
        out = ROOT / "benchmarks" / "results" / "dev" / f"{name}-{args.label}.json"
    else:
        out = ROOT / "benchmarks" / "results" / f"e2e-{name}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    line = (f"| {task} | {_pct(base['ndcg_at_10'])} | {_pct(tuned['ndcg_at_10'])} | "
            f"{result['delta_ndcg_at_10_points']:+.2f} | {_pct(base['recall_at_10'])} -> "
            f"{_pct(tuned['recall_at_10'])} | {_pct(base['mrr_at_10'])} -> {_pct(tuned['mrr_at_10'])} | "
            f"{result['minutes_total']:.1f} | {result['queries']} | {result['commit']} |")
    print(json.dumps(result, indent=2))
    print(line)
    if not args.no_append and not args.dev:
        timing = ", ".join(f"{s} {m:.1f}" for s, m in minutes.items())
        with (ROOT / "BENCHMARKS.md").open("a", encoding="utf-8") as fh:
            fh.write(f"\n<!-- e2e {task} {args.label} {time.strftime('%Y-%m-%d %H:%M')} -->\n"
                     "| task | base nDCG@10 | tuned nDCG@10 | delta | Recall@10 | MRR@10 | minutes | queries "
                     f"| commit |\n|---|---|---|---|---|---|---|---|---|\n{line}\n\n"
                     f"Stage minutes: {timing}. Generator: `{result['generator']}`. Hyperparameters: "
                     f"`{json.dumps(hyper)}`.\n")


if __name__ == "__main__":
    main()
