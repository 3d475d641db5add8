"""The stage registry and the chain runner used by the CLI, the YAML config and the Space alike.

Example::

    >>> from trainer.config import load_config
    >>> from trainer.pipeline import STAGE_NAMES, run_pipeline
    >>> STAGE_NAMES[0]
    'ingest'
    >>> cfg = load_config(None, ["ingest.source=builtin:python-docs", "run.dir=/tmp/run"])
    >>> [o.action for o in run_pipeline(cfg, to="ingest")]  # doctest: +SKIP
    ['ran']
"""

from __future__ import annotations

from pathlib import Path

from trainer import evaluate, export, generate, ingest, mine, publish, train
from trainer.config import Config
from trainer.errors import StageError
from trainer.logs import attach_run_log, get_logger
from trainer.progress import Sink
from trainer.rundir import ProgressFn, RunDir, Stage, StageOutcome, run_stage, stage_status

# Stages in pipeline order.
STAGES: dict[str, Stage] = {
    s.name: s
    for s in (ingest.STAGE, generate.STAGE, mine.STAGE, train.STAGE, evaluate.STAGE, export.STAGE, publish.STAGE)
}
STAGE_NAMES = list(STAGES)


def chain(to: str) -> list[Stage]:
    """Every stage up to and including ``to``, in pipeline order (``run --to publish`` runs them all)."""
    if to not in STAGES:
        raise StageError(f"unknown stage {to!r}; available: {', '.join(STAGE_NAMES)}")
    return [STAGES[n] for n in STAGE_NAMES[: STAGE_NAMES.index(to) + 1]]


def not_needed(stage: Stage, cfg: Config) -> str | None:
    """Why a stage of the chain is skipped by ``run`` (None: it runs). Generation is skipped when training
    takes only your own queries (``queries.ratio: 1``)."""
    q = cfg.queries
    if stage.name == "generate" and q.source and q.ratio == 1 and q.use != "eval":
        return "queries.ratio=1: training uses only your own queries (queries.source)"
    return None


def run_pipeline(
    cfg: Config,
    *,
    to: str | None = None,
    only: str | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    progress_sinks: tuple[Sink, ...] = (),
) -> list[StageOutcome]:
    """Run one stage (``only``) or the chain up to ``to`` in ``cfg.run.dir``; finished stages are no-ops.

    Each stage's counters go to ``<run>/progress.json`` and to ``progress_sinks`` (the CLI's bar,
    :class:`trainer.progress.ConsoleBar`)."""
    stages = [STAGES[only]] if only else chain(to or STAGE_NAMES[-1])
    run_dir = RunDir(cfg.run.dir)
    outcomes = []
    with run_dir.lock():
        handler = attach_run_log(run_dir.root)
        try:
            run_dir.save_config(cfg)
            for stage in stages:
                # --force re-runs only the stage named, not its finished upstream.
                is_target = stage.name == (only or to or stages[-1].name)
                why = None if only else not_needed(stage, cfg)
                if why:
                    get_logger().info("stage %s: not needed (%s)", stage.name, why)
                    continue
                outcomes.append(run_stage(stage, cfg, run_dir, force=force and is_target, progress=progress,
                                          progress_sinks=progress_sinks))
        finally:
            get_logger().removeHandler(handler)
            handler.close()
    return outcomes


def output_path(run_dir: str | Path, stage: str, name: str) -> Path:
    """Where a stage's declared output lives in a run directory (it may not exist yet). The Space, serve and
    the benchmarks find outputs through this, so a renamed output fails here, loudly, not downstream."""
    if stage not in STAGES:
        raise StageError(f"unknown stage {stage!r}; available: {', '.join(STAGE_NAMES)}")
    if name not in STAGES[stage].outputs:
        raise StageError(f"the {stage} stage has no output {name!r} (it writes {', '.join(STAGES[stage].outputs)})")
    return RunDir(run_dir).stage_dir(stage) / name


def contracts() -> list[dict[str, object]]:
    """Each stage's reads and writes, in pipeline order (``python -m trainer stages``)."""
    return [{"stage": s.name,
             "reads": [f"{i.stage}/{i.output}" + (" (optional)" if i.optional else "") for i in s.reads],
             "writes": list(s.writes), "may_write": list(s.may_write)} for s in STAGES.values()]


def contracts_table() -> str:
    """The contracts as the README's Markdown table."""
    lines = ["| stage | reads | writes |", "|---|---|---|"]
    for s in STAGES.values():
        reads = ", ".join(f"`{i.stage}/{i.output}`" + (" (optional)" if i.optional else "") for i in s.reads)
        writes = [f"`{w}`" for w in s.writes] + [f"`{w}` (if any)" for w in s.may_write]
        lines.append(f"| {s.name} | {reads or 'the corpus (`ingest.source`)'} | {', '.join(writes)} |")
    return "\n".join(lines)


def status(cfg: Config) -> list[tuple[str, str]]:
    run_dir = RunDir(cfg.run.dir)
    return [(s.name, stage_status(s, cfg, run_dir)) for s in STAGES.values()]
