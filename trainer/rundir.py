"""The run directory: where every stage reads its inputs and writes its outputs, with a manifest.

Layout::

    <run>/config.yaml               the config of the latest invocation (older ones in history/)
    <run>/run.log                   every log line of every invocation (secrets redacted)
    <run>/progress.json             the running stage's counter (``ctx.advance``; trainer/progress.py)
    <run>/stages/<stage>/           the stage's outputs (datasets saved to disk, model folders, ...)
    <run>/stages/<stage>/manifest.json
    <run>/stages/<stage>/_work/     partial work of a running or crashed stage (resumed from)
    <run>/archive/<stage>-<key>-<time>/   earlier outputs, moved aside when settings change

Each stage declares what it reads (``reads``: named outputs of earlier stages, see :class:`Input`)
and what it writes (``writes`` always, ``may_write`` when there is something to write). A stage
reads only through ``ctx.input(stage, output)`` and writes through ``ctx.output(name)``; both fail
loudly on a name the stage did not declare, so the declarations are the whole contract.

A stage's *key* hashes its config sections, its code version, its external inputs and the
fingerprints of the upstream outputs it reads (only those: a log file next to them changes
nothing downstream). Same key and a complete manifest whose outputs are intact: the stage is a
no-op. A different key: the old output is archived (never deleted) and the stage runs again;
downstream stages see a new fingerprint and re-run too. A manifest left 'running' (the process was
killed) or 'failed' (the stage raised; its one-line ``error`` is recorded) with the same key: the stage
resumes from its _work folder.

Example::

    >>> st = Stage("b", run=lambda ctx: {}, sections=(), reads=(Input("a", "out.txt"),), writes=("b.txt",))
    >>> st.upstream, st.outputs
    (('a',), ('b.txt',))
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from trainer.config import Config
from trainer.errors import StageError, TrainerError, disk_error
from trainer.files import fingerprint, write_json_atomic, write_text_atomic
from trainer.logs import get_logger, redact
from trainer.progress import ProgressHook, Sink

MANIFEST = "manifest.json"
WORK = "_work"
_FINGERPRINT_SKIP = {MANIFEST, "state.json"}  # state.json holds a random datasets fingerprint
ABSENT = "absent"  # the fingerprint of an optional input that is not there
_VERSIONED = ("torch", "transformers", "sentence-transformers", "datasets", "huggingface-hub", "mteb")

ProgressFn = Callable[[str, float | None], None]


@dataclass(frozen=True)
class Input:
    """A named output (file or folder under ``stages/<stage>/``) of an earlier stage that a stage reads.

    ``optional``: the reading stage runs without it (the upstream stage may not have run, or may not
    have written it); its key then records that it was absent.
    """

    stage: str
    output: str
    optional: bool = False


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: what it reads and writes, what decides its output, and the function that does it."""

    name: str
    run: Callable[[StageContext], dict[str, Any]]
    sections: tuple[str, ...]
    reads: tuple[Input, ...] = ()
    writes: tuple[str, ...] = ()  # outputs every successful run leaves
    may_write: tuple[str, ...] = ()  # outputs written only when there is something to write
    external: Callable[[Config], dict[str, str]] | None = None  # fingerprints of inputs outside the run dir
    version: str = "1"
    help: str = ""

    @property
    def upstream(self) -> tuple[str, ...]:
        """The stages that must have finished first (those of the required inputs)."""
        return tuple(dict.fromkeys(i.stage for i in self.reads if not i.optional))

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.writes + self.may_write

    def declared_input(self, stage: str, output: str) -> Input:
        for i in self.reads:
            if (i.stage, i.output) == (stage, output):
                return i
        raise StageError(
            f"stage {self.name!r} read {stage}/{output}, which it does not declare in its reads "
            f"({', '.join(f'{i.stage}/{i.output}' for i in self.reads) or 'none'}): add it to the stage's reads"
        )


@dataclass
class StageContext:
    cfg: Config
    run_dir: RunDir
    stage: Stage
    resumed: bool
    progress: ProgressFn | None = None
    progress_sinks: tuple[Sink, ...] = ()
    log: Any = field(default_factory=get_logger)
    _hook: ProgressHook | None = field(default=None, repr=False)

    @property
    def dir(self) -> Path:
        return self.run_dir.stage_dir(self.stage.name)

    @property
    def work(self) -> Path:
        path = self.dir / WORK
        path.mkdir(parents=True, exist_ok=True)
        return path

    def input(self, stage: str, output: str) -> Path | None:
        """The path of a declared input. A required one must exist (else an actionable StageError); an
        optional one is None when its stage has not finished or did not write it."""
        decl = self.stage.declared_input(stage, output)
        path = self.run_dir.stage_dir(stage) / output
        done = self.run_dir.is_complete(stage)
        if done and path.exists():
            return path
        if decl.optional:
            return None
        raise StageError(
            f"stage {self.stage.name!r} needs {stage}/{output}, which is missing at {path}: re-run the {stage} "
            f"stage (`python -m trainer {stage} --force`)"
        )

    def manifest(self, stage: str) -> dict[str, Any] | None:
        """The manifest of a finished stage this stage reads from (its counts, versions); None if unfinished."""
        if stage not in {i.stage for i in self.stage.reads}:
            raise StageError(f"stage {self.stage.name!r} read the manifest of {stage!r}, which it does not declare "
                             "in its reads")
        m = self.run_dir.manifest(stage)
        return m if m and m.get("status") == "complete" else None

    def output(self, name: str) -> Path:
        """The path of one of this stage's declared outputs."""
        if name not in self.stage.outputs:
            raise StageError(f"stage {self.stage.name!r} wrote {name!r}, which it does not declare in its writes "
                             f"({', '.join(self.stage.outputs) or 'none'})")
        return self.dir / name

    def report(self, message: str, fraction: float | None = None) -> None:
        if self.progress is not None:
            self.progress(message, fraction)

    @property
    def hook(self) -> ProgressHook:
        if self._hook is None:
            self._hook = ProgressHook(self.run_dir.root, self.stage.name, self.progress_sinks)
        return self._hook

    def advance(self, done: float, total: float | None = None, *, unit: str = "items", label: str | None = None,
                message: str = "", **extra: Any) -> None:
        """Report the stage's own counter (``ctx.advance(120, 600, unit="queries")``): written to
        ``<run>/progress.json`` with rate and ETA (the Space's bar) and handed to the CLI's bar."""
        self.hook.update(done, total, unit=unit, label=label, message=message, **extra)


@dataclass
class StageOutcome:
    stage: str
    action: str  # "skipped" (up to date), "ran", "resumed"
    manifest: dict[str, Any]


def fingerprint_dir(path: Path) -> str:
    """sha256 over the relative paths and contents of a stage's output files (not its manifest or _work)."""
    return fingerprint(path, skip=_FINGERPRINT_SKIP)


def output_fingerprints(stage: Stage, sdir: Path) -> dict[str, str]:
    """Fingerprint of each declared output of a finished stage (``absent`` for one it did not write)."""
    return {name: fingerprint(sdir / name, skip=_FINGERPRINT_SKIP) if (sdir / name).exists() else ABSENT
            for name in stage.outputs}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def _diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes.extend(_diff(a, b, f"{prefix}{key}."))
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def stage_dir(self, name: str) -> Path:
        return self.root / "stages" / name

    def manifest(self, name: str) -> dict[str, Any] | None:
        path = self.stage_dir(name) / MANIFEST
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None  # a torn write: treated as never finished

    def is_complete(self, name: str) -> bool:
        m = self.manifest(name)
        return bool(m) and m.get("status") == "complete"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One process at a time per run directory (the OS drops the lock if the process dies)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fh = (self.root / ".lock").open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise StageError(
                f"another process is already working in {self.root}; wait for it to finish or use "
                "another run directory (run.dir=...)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def is_locked(self) -> bool:
        """Whether a process holds :meth:`lock` (is working in this run directory) right now."""
        path = self.root / ".lock"
        if not path.is_file():
            return False
        with path.open("a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False

    def save_config(self, cfg: Config) -> None:
        """Write config.yaml; a different earlier one is kept under history/."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "config.yaml"
        text = cfg.to_yaml()
        if path.is_file():
            old = path.read_text(encoding="utf-8")
            if old == text:
                return
            hist = self.root / "history"
            hist.mkdir(exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(path.stat().st_mtime))
            shutil.copy2(path, hist / f"config-{stamp}-{hashlib.sha256(old.encode()).hexdigest()[:8]}.yaml")
        write_text_atomic(path, text)

    @property
    def archive_dir(self) -> Path:
        """Where earlier outputs (and damaged checkpoints) are moved: never deleted."""
        return self.root / "archive"

    def archive(self, name: str, key: str | None) -> Path:
        src = self.stage_dir(name)
        dest = self.archive_dir / f"{name}-{(key or 'unknown')[:10]}-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while dest.exists():
            dest = dest.with_name(f"{dest.name}.{n}")
            n += 1
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        return dest


def _input_fingerprint(run_dir: RunDir, reader: str, inp: Input) -> str:
    """The fingerprint of one upstream output, as recorded when its stage finished."""
    m = run_dir.manifest(inp.stage)
    if not m or m.get("status") != "complete":
        if inp.optional:
            return ABSENT
        raise StageError(
            f"stage {reader!r} needs the output of {inp.stage!r}, which has not finished in "
            f"{run_dir.root}. Run `python -m trainer {inp.stage}` first, or `python -m trainer run "
            f"--to {reader}`."
        )
    recorded = (m.get("outputs") or {}).get(inp.output)
    path = run_dir.stage_dir(inp.stage) / inp.output
    if recorded is None:  # a stage that does not declare this output: hash what is there
        recorded = fingerprint(path, skip=_FINGERPRINT_SKIP) if path.exists() else ABSENT
    if recorded == ABSENT and not inp.optional:
        raise StageError(f"stage {reader!r} needs {inp.stage}/{inp.output}, which the {inp.stage} stage did not "
                         f"write in {run_dir.root}; re-run it (`python -m trainer {inp.stage} --force`)")
    return recorded


def stage_identity(stage: Stage, cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    """Everything that decides a stage's output; its hash is the stage key."""
    upstream = {f"{i.stage}/{i.output}": _input_fingerprint(run_dir, stage.name, i) for i in stage.reads}
    ident = {
        "stage": stage.name,
        "version": stage.version,
        "config": cfg.pick(*stage.sections),
        "inputs": stage.external(cfg) if stage.external else {},
        "upstream": upstream,
    }
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    ident["key"] = hashlib.sha256(blob.encode()).hexdigest()
    return ident


def verify_outputs(stage: Stage, run_dir: RunDir, manifest: dict[str, Any]) -> str | None:
    """None when a finished stage's outputs are on disk as it left them, else what is wrong."""
    sdir = run_dir.stage_dir(stage.name)
    recorded = manifest.get("outputs")
    if recorded is None:  # a manifest without per-output fingerprints: the whole folder
        return None if fingerprint_dir(sdir) == manifest.get("output_fingerprint") else "outputs modified"
    for name in stage.writes:
        if not (sdir / name).exists():
            return f"output {name} missing"
    now = output_fingerprints(stage, sdir)
    changed = [n for n, fp in recorded.items() if n in now and now[n] != fp]
    return f"output {changed[0]} modified" if changed else None


def run_stage(
    stage: Stage,
    cfg: Config,
    run_dir: RunDir,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    progress_sinks: tuple[Sink, ...] = (),
) -> StageOutcome:
    """Run one stage in ``run_dir``: a no-op when up to date, a resume after a crash."""
    log = get_logger()
    ident = stage_identity(stage, cfg, run_dir)
    key = ident["key"]
    old = run_dir.manifest(stage.name)
    sdir = run_dir.stage_dir(stage.name)

    if old and old.get("status") == "complete" and old.get("key") == key and not force:
        problem = verify_outputs(stage, run_dir, old)
        if problem is None:
            log.info("stage %s: up to date (key %s), nothing to do", stage.name, key[:10])
            return StageOutcome(stage.name, "skipped", old)
        log.warning("stage %s: %s after it finished; running it again", stage.name, problem)

    # "running" (killed) and "failed" (raised) both left their _work folder to resume from
    resumed = bool(old) and old.get("status") in ("running", "failed") and old.get("key") == key and not force
    if sdir.exists() and not resumed:
        if old is None and not any(sdir.iterdir()):
            pass
        else:
            why = "--force" if force and old and old.get("key") == key else "its inputs or settings changed"
            changes = _diff(old.get("identity", {}), ident) if old else []
            dest = run_dir.archive(stage.name, old.get("key") if old else None)
            log.warning(
                "stage %s: %s; previous output moved to %s%s",
                stage.name, why, dest,
                ("\n  " + "\n  ".join(changes[:20])) if changes else "",
            )
    sdir.mkdir(parents=True, exist_ok=True)

    started = time.time()
    manifest: dict[str, Any] = {
        "stage": stage.name,
        "status": "running",
        "key": key,
        "identity": ident,
        "config_hash": cfg.section_hash(*stage.sections),
        "started": (old or {}).get("started", started) if resumed else started,
        "attempts": ((old or {}).get("attempts", 0) + 1) if resumed else 1,
        "versions": package_versions(),
    }
    write_json_atomic(sdir / MANIFEST, manifest)
    log.info("stage %s: %s (key %s)", stage.name, "resuming" if resumed else "starting", key[:10])

    ctx = StageContext(cfg=cfg, run_dir=run_dir, stage=stage, resumed=resumed, progress=progress,
                       progress_sinks=progress_sinks)
    ctx.hook.start("resuming" if resumed else "starting")
    try:
        counts = stage.run(ctx)
        missing = [n for n in stage.writes if not (sdir / n).exists()]
        if missing:
            raise StageError(f"stage {stage.name!r} finished without writing its declared outputs {missing} in "
                             f"{sdir}")
    except Exception as exc:
        # Recorded for `status` and the Space; the stage still resumes from _work on the next run. A kill
        # (SIGKILL, or SIGTERM/Ctrl-C: KeyboardInterrupt) records nothing and reads "interrupted".
        manifest.update(status="failed", error=failure_reason(exc), failed=time.time())
        write_json_atomic(sdir / MANIFEST, manifest)
        raise
    finally:
        ctx.hook.flush()
    shutil.rmtree(sdir / WORK, ignore_errors=True)
    finished = time.time()
    manifest.update(
        status="complete",
        finished=finished,
        duration_s=round(finished - started, 3),
        counts=counts,
        outputs=output_fingerprints(stage, sdir),
        output_fingerprint=fingerprint_dir(sdir),
    )
    write_json_atomic(sdir / MANIFEST, manifest)
    log.info("stage %s: done in %.1f s %s", stage.name, finished - started, json.dumps(counts, default=str))
    return StageOutcome(stage.name, "resumed" if resumed else "ran", manifest)


def failure_reason(exc: BaseException, limit: int = 300) -> str:
    """One line saying why a stage failed, secrets redacted: the first line of the error (a full disk or a
    file in the way as its fix), with the exception type for errors that are not the trainer's own.

    >>> failure_reason(StageError("no chunks to generate queries for\\nmore detail"))
    'no chunks to generate queries for'
    >>> failure_reason(ValueError("token hf_abcdefghijklmnop leaked"))
    'ValueError: token *** leaked'
    """
    error = disk_error(exc) if not isinstance(exc, TrainerError) else None
    if error is not None:
        exc = error
    text = str(exc).strip().splitlines()[0].strip() if str(exc).strip() else ""
    if not isinstance(exc, TrainerError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def stage_status(stage: Stage, cfg: Config, run_dir: RunDir) -> str:
    """'complete', 'stale (...)' (settings, upstream or outputs changed), 'running', 'failed: <reason> (...)',
    'interrupted (...)' (killed: left 'running' with no process working in the run directory), 'missing'."""
    m = run_dir.manifest(stage.name)
    if not m:
        return "missing"
    if m.get("status") == "failed":
        return f"failed: {m.get('error') or 'unknown error'} (run it again to resume)"
    if m.get("status") != "complete":
        return "running" if run_dir.is_locked() else "interrupted (run it again to resume)"
    problem = verify_outputs(stage, run_dir, m)
    if problem:
        return f"stale ({problem}: run it again)"
    try:
        key = stage_identity(stage, cfg, run_dir)["key"]
    except StageError:
        return "stale (upstream missing)"
    return "complete" if key == m.get("key") else "stale (settings or inputs changed)"
