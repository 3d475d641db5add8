"""The run directory: where every stage reads its inputs and writes its outputs, with a manifest.

Layout::

    <run>/config.yaml               the config of the latest invocation (older ones in history/)
    <run>/run.log                   every log line of every invocation (secrets redacted)
    <run>/stages/<stage>/           the stage's outputs (datasets saved to disk, model folders, ...)
    <run>/stages/<stage>/manifest.json
    <run>/stages/<stage>/_work/     partial work of a running or crashed stage (resumed from)
    <run>/archive/<stage>-<key>-<time>/   earlier outputs, moved aside when settings change

A stage's *key* hashes its config sections, its code version, its external inputs and the output
fingerprints of its upstream stages. Same key and a complete manifest: the stage is a no-op. A
different key: the old output is archived (never deleted) and the stage runs again; downstream
stages see a new upstream fingerprint and re-run too. A manifest left 'running' by a crash with the
same key: the stage resumes from its _work folder.
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
from trainer.errors import StageError
from trainer.logs import get_logger

MANIFEST = "manifest.json"
WORK = "_work"
_FINGERPRINT_SKIP = {MANIFEST, "state.json"}  # state.json holds a random datasets fingerprint
_VERSIONED = ("torch", "transformers", "sentence-transformers", "datasets", "huggingface-hub", "mteb")

ProgressFn = Callable[[str, float | None], None]


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: what it depends on and the function that does the work."""

    name: str
    run: Callable[[StageContext], dict[str, Any]]
    sections: tuple[str, ...]
    upstream: tuple[str, ...] = ()
    inputs: Callable[[Config], dict[str, str]] | None = None
    version: str = "1"
    help: str = ""


@dataclass
class StageContext:
    cfg: Config
    run_dir: RunDir
    stage: Stage
    resumed: bool
    progress: ProgressFn | None = None
    log: Any = field(default_factory=get_logger)

    @property
    def dir(self) -> Path:
        return self.run_dir.stage_dir(self.stage.name)

    @property
    def work(self) -> Path:
        path = self.dir / WORK
        path.mkdir(parents=True, exist_ok=True)
        return path

    def upstream_dir(self, name: str) -> Path:
        return self.run_dir.stage_dir(name)

    def report(self, message: str, fraction: float | None = None) -> None:
        if self.progress is not None:
            self.progress(message, fraction)


@dataclass
class StageOutcome:
    stage: str
    action: str  # "skipped" (up to date), "ran", "resumed"
    manifest: dict[str, Any]


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)


def fingerprint_dir(path: Path) -> str:
    """sha256 over the relative paths and contents of a stage's output files."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if rel.parts[0] == WORK or rel.name in _FINGERPRINT_SKIP or rel.name.endswith(".tmp"):
            continue
        digest.update(str(rel).encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


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
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    def archive(self, name: str, key: str | None) -> Path:
        src = self.stage_dir(name)
        dest = self.root / "archive" / f"{name}-{(key or 'unknown')[:10]}-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while dest.exists():
            dest = dest.with_name(f"{dest.name}.{n}")
            n += 1
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        return dest


def stage_identity(stage: Stage, cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    """Everything that decides a stage's output; its hash is the stage key."""
    upstream = {}
    for name in stage.upstream:
        m = run_dir.manifest(name)
        if not m or m.get("status") != "complete":
            raise StageError(
                f"stage {stage.name!r} needs the output of {name!r}, which has not finished in "
                f"{run_dir.root}. Run `python -m trainer {name}` first, or `python -m trainer run "
                f"--to {stage.name}`."
            )
        upstream[name] = m["output_fingerprint"]
    ident = {
        "stage": stage.name,
        "version": stage.version,
        "config": cfg.pick(*stage.sections),
        "inputs": stage.inputs(cfg) if stage.inputs else {},
        "upstream": upstream,
    }
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    ident["key"] = hashlib.sha256(blob.encode()).hexdigest()
    return ident


def run_stage(
    stage: Stage,
    cfg: Config,
    run_dir: RunDir,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> StageOutcome:
    """Run one stage in ``run_dir``: a no-op when up to date, a resume after a crash."""
    log = get_logger()
    ident = stage_identity(stage, cfg, run_dir)
    key = ident["key"]
    old = run_dir.manifest(stage.name)
    sdir = run_dir.stage_dir(stage.name)

    if old and old.get("status") == "complete" and old.get("key") == key and not force:
        if fingerprint_dir(sdir) == old.get("output_fingerprint"):
            log.info("stage %s: up to date (key %s), nothing to do", stage.name, key[:10])
            return StageOutcome(stage.name, "skipped", old)
        log.warning("stage %s: outputs were modified after it finished; running it again", stage.name)

    resumed = bool(old) and old.get("status") == "running" and old.get("key") == key and not force
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

    ctx = StageContext(cfg=cfg, run_dir=run_dir, stage=stage, resumed=resumed, progress=progress)
    counts = stage.run(ctx)

    shutil.rmtree(sdir / WORK, ignore_errors=True)
    finished = time.time()
    manifest.update(
        status="complete",
        finished=finished,
        duration_s=round(finished - started, 3),
        counts=counts,
        output_fingerprint=fingerprint_dir(sdir),
    )
    write_json_atomic(sdir / MANIFEST, manifest)
    log.info("stage %s: done in %.1f s %s", stage.name, finished - started, json.dumps(counts, default=str))
    return StageOutcome(stage.name, "resumed" if resumed else "ran", manifest)


def stage_status(stage: Stage, cfg: Config, run_dir: RunDir) -> str:
    """'complete', 'stale' (settings or upstream changed), 'running/crashed', 'missing'."""
    m = run_dir.manifest(stage.name)
    if not m:
        return "missing"
    if m.get("status") != "complete":
        return "running or crashed (re-run to resume)"
    try:
        key = stage_identity(stage, cfg, run_dir)["key"]
    except StageError:
        return "stale (upstream missing)"
    return "complete" if key == m.get("key") else "stale (settings or inputs changed)"
