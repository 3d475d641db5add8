"""Leaderboard references from an MTEB results folder, and the base-vs-tuned comparison report.

The results folder has the layout of the public ``embeddings-benchmark/results`` repository
(``results/<org__model>/<revision>/<Task>.json`` + ``model_meta.json``); it is read with mteb's own
``ResultCache.load_results`` and ``BenchmarkResults.join_revisions`` (one revision per model, as the
leaderboard picks it). Offline, ``$DOMAIN_EMBED_DATA/mteb-results`` stands in for the live leaderboard.

Example::

    >>> rows = [{"task": "SciFact", "base": 0.645, "tuned": 0.660}]
    >>> report = compare(rows)
    >>> report["improved_everywhere"], report["regressions"]
    (True, [])
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.errors import InputError
from trainer.paths import data_dir

SMALL = 100_000_000
MEDIUM = 500_000_000


@dataclass(frozen=True)
class ModelScore:
    model: str
    revision: str | None
    n_parameters: int | None
    score: float


def default_results_dir(results_dir: str | Path | None = None) -> Path:
    """``results_dir`` if given, else ``$DOMAIN_EMBED_DATA/mteb-results``."""
    return Path(results_dir).expanduser() if results_dir else data_dir() / "mteb-results"


def _check_results_dir(path: Path) -> None:
    if not (path / "results").is_dir():
        raise InputError(
            f"no MTEB results folder at {path} (expected {path / 'results'}/<org__model>/<revision>/<Task>.json). "
            "Set evaluate.results_dir to a clone of https://github.com/embeddings-benchmark/results, or "
            "DOMAIN_EMBED_DATA to the folder holding mteb-results/."
        )


@functools.lru_cache(maxsize=8)
def _load(path: str, tasks: tuple[str, ...]) -> dict[str, tuple[ModelScore, ...]]:
    import mteb

    cache = mteb.ResultCache(cache_path=path)
    bench = cache.load_results(tasks=list(tasks), include_remote=False, only_main_score=True).join_revisions()
    out: dict[str, list[ModelScore]] = {t: [] for t in tasks}
    for model_result in bench:
        meta = model_result.model_meta
        n_params = getattr(meta, "n_parameters", None) if meta is not None else None
        for tr in model_result.task_results:
            if tr.task_name not in out:
                continue
            score = task_main_score(tr)
            if score is None:
                continue
            out[tr.task_name].append(ModelScore(model_result.model_name, model_result.model_revision, n_params, score))
    return {t: tuple(sorted(v, key=lambda s: -s.score)) for t, v in out.items()}


def task_main_score(task_result: Any) -> float | None:
    """The main score of an mteb TaskResult on its task's evaluation splits (mean over subsets)."""
    splits = None
    try:
        import mteb

        wanted = list(mteb.get_task(task_result.task_name).metadata.eval_splits)
        splits = [s for s in wanted if s in task_result.scores] or None
    except Exception:  # noqa: BLE001 - an unknown task: use whatever splits it has
        splits = None
    try:
        value = float(task_result.get_score(splits=splits))
    except Exception:  # noqa: BLE001 - malformed or empty result file
        return None
    return None if math.isnan(value) else value


def load_scores(task_names: Iterable[str], results_dir: str | Path | None = None) -> dict[str, list[ModelScore]]:
    """task -> every model's main score on it (best first), from an MTEB results folder."""
    tasks = tuple(sorted(set(task_names)))
    if not tasks:  # mteb's loader fails on an empty task list (e.g. evaluate.mteb=false)
        return {}
    path = default_results_dir(results_dir)
    _check_results_dir(path)
    loaded = _load(str(path.resolve()), tasks)
    return {t: list(v) for t, v in loaded.items()}


def _best(scores: Sequence[ModelScore], max_params: int | None = None) -> dict[str, Any] | None:
    for s in scores:  # sorted best first
        if max_params is None or (s.n_parameters is not None and s.n_parameters < max_params):
            return {"model": s.model, "score": s.score, "n_parameters": s.n_parameters}
    return None


def references(
    task_names: Iterable[str], base_model: str | None = None, results_dir: str | Path | None = None
) -> dict[str, dict[str, Any]]:
    """Per task: best overall, best under 100M and 500M parameters, the base model's own score."""
    scores = load_scores(task_names, results_dir)
    out = {}
    for task, rows in scores.items():
        base = next((s.score for s in rows if base_model and s.model == base_model), None)
        out[task] = {
            "n_models": len(rows),
            "best": _best(rows),
            "best_under_100m": _best(rows, SMALL),
            "best_under_500m": _best(rows, MEDIUM),
            "base_leaderboard": base,
        }
    return out


def compare(
    rows: Sequence[Mapping[str, Any]],
    refs: Mapping[str, Mapping[str, Any]] | None = None,
    tolerance: float = 0.0,
) -> dict[str, Any]:
    """Base vs tuned per task, with leaderboard references and the regression guard.

    ``rows``: dicts with ``task``, ``base`` and ``tuned`` main scores (None when not evaluated) and any
    extra fields (``kind``, ``metric``, ``contamination``...), which are kept. A task is a regression
    when ``tuned < base - tolerance``; ``improved_everywhere`` is true only when at least one task was
    compared and every compared task improved by more than ``tolerance``.
    """
    refs = refs or {}
    tasks = []
    for row in rows:
        entry = dict(row)
        base, tuned = row.get("base"), row.get("tuned")
        if base is not None and tuned is not None:
            entry["delta"] = tuned - base
            entry["delta_rel"] = (tuned - base) / base if base else None
        else:
            entry["delta"] = entry["delta_rel"] = None
        ref = refs.get(row["task"])
        if ref:
            entry["leaderboard"] = ref
        tasks.append(entry)
    compared = [t for t in tasks if t["delta"] is not None]
    regressions = [
        {"task": t["task"], "base": t["base"], "tuned": t["tuned"], "delta": t["delta"]}
        for t in compared if t["delta"] < -tolerance
    ]
    return {
        "tasks": tasks,
        "compared": len(compared),
        "regressions": regressions,
        "no_regressions": not regressions,
        "improved_everywhere": bool(compared) and all(t["delta"] > tolerance for t in compared),
        "regression_tolerance": tolerance,
    }


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x * 100:+.1f}%" if pct else f"{x:.4f}"


def _params(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.0f}M" if n < 1e9 else f"{n / 1e9:.1f}B"


def _ref_cell(ref: Mapping[str, Any] | None, key: str) -> str:
    best = (ref or {}).get(key)
    if not best:
        return "–"
    return f"{best['score']:.4f} ({best['model']}, {_params(best['n_parameters'])})"


def to_markdown(report: Mapping[str, Any], title: str = "Evaluation report") -> str:
    lines = [f"# {title}", ""]
    verdict = (
        "improved on every compared task" if report["improved_everywhere"]
        else "no regression, but not improved everywhere" if report["no_regressions"]
        else f"REGRESSIONS on {len(report['regressions'])} task(s): "
        + ", ".join(r["task"] for r in report["regressions"])
    )
    tol = report["regression_tolerance"]
    near = [f"{t['task']} {t['delta']:+.4f}" for t in report["tasks"]
            if t.get("delta") is not None and -tol <= t["delta"] < 0]
    if near:  # below base, but by less than a re-run moves: not called a regression
        verdict += f"; within the tolerance: {', '.join(near)}"
    lines += [f"**Verdict:** {verdict} ({report['compared']} compared, tolerance {tol}).", ""]
    lines += [
        "| task | kind | metric | base | tuned | Δ | Δ rel | base on leaderboard | best < 100M | best < 500M | best "
        "| contamination | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in report["tasks"]:
        ref = t.get("leaderboard")
        contamination = t.get("contamination")
        frac = "–" if contamination is None else f"{contamination['fraction']:.1%}"
        lines.append(
            f"| {t['task']} | {t.get('kind', '')} | {t.get('metric', '')} | {_fmt(t.get('base'))} | "
            f"{_fmt(t.get('tuned'))} | {_fmt(t['delta'])} | {_fmt(t['delta_rel'], pct=True)} | "
            f"{_fmt((ref or {}).get('base_leaderboard'))} | {_ref_cell(ref, 'best_under_100m')} | "
            f"{_ref_cell(ref, 'best_under_500m')} | {_ref_cell(ref, 'best')} | {frac} | {t.get('note', '')} |"
        )
    extra = report.get("matryoshka")
    if extra:
        lines += ["", "## Score vs Matryoshka dimension (synthetic split, nDCG@10)", "",
                  "| dim | base | tuned |", "|---|---|---|"]
        for dim in sorted(extra["base"], key=int, reverse=True):
            lines.append(f"| {dim} | {_fmt(extra['base'][dim])} | {_fmt(extra.get('tuned', {}).get(dim))} |")
    return "\n".join(lines) + "\n"


def plot_report(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """scores.png (base, tuned, references per task), deltas.png, matryoshka.png when available."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    tasks = [t for t in report["tasks"] if t.get("base") is not None or t.get("tuned") is not None]
    if tasks:
        names = [t["task"] for t in tasks]
        series = {
            "base": [t.get("base") for t in tasks],
            "tuned": [t.get("tuned") for t in tasks],
            "best < 100M": [((t.get("leaderboard") or {}).get("best_under_100m") or {}).get("score") for t in tasks],
            "best overall": [((t.get("leaderboard") or {}).get("best") or {}).get("score") for t in tasks],
        }
        fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4))
        width = 0.8 / len(series)
        for i, (label, values) in enumerate(series.items()):
            xs = [j + i * width for j, v in enumerate(values) if v is not None]
            ax.bar(xs, [v for v in values if v is not None], width, label=label)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, rotation=30, ha="right")
        ax.set_ylabel("main score (nDCG@10)")
        ax.set_title("Score per task")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "scores.png", dpi=110)
        plt.close(fig)
        written.append(out_dir / "scores.png")

        compared = [t for t in tasks if t.get("delta") is not None]
        if compared:
            fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(compared)), 3.5))
            values = [t["delta"] for t in compared]
            ax.bar([t["task"] for t in compared], values, color=["tab:green" if v >= 0 else "tab:red" for v in values])
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_ylabel("tuned − base")
            ax.set_title("Delta vs base model")
            plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
            fig.tight_layout()
            fig.savefig(out_dir / "deltas.png", dpi=110)
            plt.close(fig)
            written.append(out_dir / "deltas.png")

    mat = report.get("matryoshka")
    if mat:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for label, curve in mat.items():
            if not isinstance(curve, dict) or not curve:
                continue
            dims = sorted(curve, key=int)
            ax.plot([int(d) for d in dims], [curve[d] for d in dims], marker="o", label=label)
        ax.set_xlabel("embedding dimension")
        ax.set_ylabel("nDCG@10 (synthetic split)")
        ax.set_title("Score vs Matryoshka dimension")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "matryoshka.png", dpi=110)
        plt.close(fig)
        written.append(out_dir / "matryoshka.png")
    return written


def write_report(report: Mapping[str, Any], out_dir: Path, title: str = "Evaluation report") -> dict[str, Path]:
    """report.json, report.md and the plots under out_dir/plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str), encoding="utf-8")
    (out_dir / "report.md").write_text(to_markdown(report, title), encoding="utf-8")
    plots = plot_report(report, out_dir / "plots")
    return {"json": out_dir / "report.json", "markdown": out_dir / "report.md",
            **{p.stem: p for p in plots}}
