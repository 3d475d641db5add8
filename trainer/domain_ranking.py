"""Which MTEB subcategory has the most room for a small specialist (``python -m trainer domains``).

The subcategories and their tasks come from the domain registry (trainer.domains). The ranking reads
an MTEB results folder (leaderboard snapshot) and, per task, takes the best model, the best model
under 100M and under 500M parameters, the spread across models and the base model's score; per
domain it averages those over the tasks that have results. ``room`` (the rank key) is the mean gap
between the best model and the best model under 100M parameters: how far the size class of
all-MiniLM-L6-v2 trails the state of the art on that domain. ``base_gap`` is how far the base model
itself trails the best.

Example::

    >>> _f(0.12345), _f(None)
    ('0.123', '–')
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.domains import DEFAULT_BASE, SUBCATEGORIES, get_domain
from trainer.errors import TrainerError
from trainer.leaderboard import MEDIUM, SMALL, default_results_dir, load_scores


def corpus_size(task_name: str) -> int | None:
    """Documents in a task's corpus, from mteb's descriptive statistics (largest eval split)."""
    import mteb

    try:
        task = mteb.get_task(task_name)
        stats = task.metadata.descriptive_stats or {}
    except Exception:  # noqa: BLE001 - no statistics shipped for this task
        return None
    sizes = []
    for split in task.metadata.eval_splits:
        s = stats.get(split) or {}
        n = s.get("num_documents")
        if n is None and s.get("hf_subset_descriptive_stats"):
            n = sum(sub.get("num_documents") or 0 for sub in s["hf_subset_descriptive_stats"].values())
        if n:
            sizes.append(int(n))
    return max(sizes) if sizes else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def domains_table(
    results_dir: str | Path | None = None,
    domains: Sequence[str] = SUBCATEGORIES,
    base_model: str = DEFAULT_BASE,
) -> list[dict[str, Any]]:
    """One dict per domain, ranked by room for improvement (largest first); see the module doc."""
    all_tasks = {d: get_domain(d).tasks() for d in domains}
    scores = load_scores({t for ts in all_tasks.values() for t in ts}, results_dir)
    rows = []
    for domain, tasks in all_tasks.items():
        per_task = []
        for task in tasks:
            entries = scores.get(task) or []
            if not entries:
                continue
            best = entries[0].score
            small = next((s.score for s in entries if s.n_parameters is not None and s.n_parameters < SMALL), None)
            medium = next((s.score for s in entries if s.n_parameters is not None and s.n_parameters < MEDIUM), None)
            base = next((s.score for s in entries if s.model == base_model), None)
            values = [s.score for s in entries]
            per_task.append({
                "task": task, "n_models": len(entries), "best": best, "best_under_100m": small,
                "best_under_500m": medium, "base": base,
                "spread": statistics.pstdev(values) if len(values) > 1 else 0.0,
                "gap_small": None if small is None else best - small,
                "gap_medium": None if medium is None else best - medium,
                "base_gap": None if base is None else best - base,
                "corpus_docs": corpus_size(task),
            })

        def avg(key: str, rows_: list[dict[str, Any]] = per_task) -> float | None:
            return _mean([r[key] for r in rows_ if r[key] is not None])

        sizes = [r["corpus_docs"] for r in per_task if r["corpus_docs"]]
        rows.append({
            "domain": domain,
            "benchmark": get_domain(domain).benchmark,
            "n_tasks": len(tasks),
            "n_tasks_with_results": len(per_task),
            "tasks_with_results": [r["task"] for r in per_task],
            "n_models": max((r["n_models"] for r in per_task), default=0),
            "best": avg("best"),
            "best_under_100m": avg("best_under_100m"),
            "best_under_500m": avg("best_under_500m"),
            "base": avg("base"),
            "room": avg("gap_small"),
            "gap_500m": avg("gap_medium"),
            "base_gap": avg("base_gap"),
            "spread": avg("spread"),
            "median_corpus_docs": int(statistics.median(sizes)) if sizes else None,
            "per_task": per_task,
        })
    rows.sort(key=lambda r: (r["room"] is not None, r["room"] or 0.0), reverse=True)
    for i, row in enumerate(rows, 1):
        row["rank"] = i
    return rows


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| rank | domain | tasks (with results) | best | best < 100M | best < 500M | base | room (best − best<100M) "
        "| base gap | spread | median corpus docs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rank']} | {r['domain']} | {r['n_tasks']} ({r['n_tasks_with_results']}) | {_f(r['best'])} | "
            f"{_f(r['best_under_100m'])} | {_f(r['best_under_500m'])} | {_f(r['base'])} | {_f(r['room'])} | "
            f"{_f(r['base_gap'])} | {_f(r['spread'])} | "
            f"{r['median_corpus_docs'] if r['median_corpus_docs'] is not None else '–'} |"
        )
    return "\n".join(lines) + "\n"


def plot_domains(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Grouped bars per domain: best, best < 500M, best < 100M, base (mean nDCG@10 over its tasks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("best", "best"), ("best_under_500m", "best < 500M"), ("best_under_100m", "best < 100M"),
              ("base", "all-MiniLM-L6-v2")]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        xs = [j + i * width for j, r in enumerate(rows) if r[key] is not None]
        ax.bar(xs, [r[key] for r in rows if r[key] is not None], width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))],
                  [f"{r['rank']}. {r['domain']}\nroom {_f(r['room'])}" for r in rows])
    ax.set_ylabel("mean nDCG@10 over the domain's tasks")
    ax.set_title("Room for a small specialist, by MTEB subcategory")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_domains(out_dir: Path, results_dir: str | Path | None = None) -> dict[str, Path]:
    """domains.md, domains.json and domains.png in out_dir."""
    rows = domains_table(results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "domains.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    (out_dir / "domains.md").write_text(to_markdown(rows), encoding="utf-8")
    return {"json": out_dir / "domains.json", "markdown": out_dir / "domains.md",
            "png": plot_domains(rows, out_dir / "domains.png")}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainer domains [--results-dir DIR] [--out DIR] [--json]``."""
    parser = argparse.ArgumentParser(prog="trainer domains", description="Rank MTEB subcategories by room "
                                     "for improvement, from an MTEB results folder.")
    parser.add_argument("--results-dir", default=None, help=f"default: {default_results_dir()}")
    parser.add_argument("--out", default=None, help="write domains.md/.json/.png here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = parser.parse_args(argv)
    try:
        if args.out:
            paths = write_domains(Path(args.out), args.results_dir)
            rows = json.loads(paths["json"].read_text())
        else:
            rows = domains_table(args.results_dir)
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2) if args.json else to_markdown(rows), end="" if not args.json else "\n")
    return 0
