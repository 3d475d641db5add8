"""What a visitor can download from their run, and the Hub links of what was pushed.

Uses ``trainer.artifacts`` (``artifacts(run_dir)``, ``build(run_dir, name)``, ``pushed_links(run_dir)``)
when that module exists; until then this module builds the same files itself, through the stages'
declared outputs (``trainer.pipeline.output_path``). Zips are built once per finished stage output
(their name carries the stage's manifest key) under ``<run>/downloads/``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from trainer.pipeline import output_path
from trainer.rundir import RunDir

try:  # the shared implementation, when present
    from trainer import artifacts as _shared  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the branch
    _shared = None


def _zip(run_dir: Path, stage: str, src: Path, name: str) -> Path | None:
    m = RunDir(run_dir).manifest(stage)
    if not src.exists() or not m or m.get("status") != "complete":
        return None
    out_dir = run_dir / "downloads"
    dest = out_dir / f"{name}-{str(m.get('key', 'x'))[:8]}.zip"
    if not dest.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob(f"{name}-*.zip"):
            old.unlink()
        tmp = shutil.make_archive(str(out_dir / f".{name}.tmp"), "zip", root_dir=src.parent, base_dir=src.name)
        os.replace(tmp, dest)
    return dest


def downloads(run_dir: str | Path) -> list[Path]:
    """Every downloadable file of a run: model zip, ONNX fp32/int8, evaluation report (md/json/png), PUSH.md,
    the leaderboard submission folder (zip). Only finished stages' outputs."""
    run_dir = Path(run_dir)
    if _shared is not None and hasattr(_shared, "artifacts") and hasattr(_shared, "build"):
        files = []
        for art in _shared.artifacts(run_dir):
            name = getattr(art, "name", art)
            path = _shared.build(run_dir, name)
            if path is not None and Path(path).is_file():
                files.append(Path(path))
        return files
    rd = RunDir(run_dir)
    files: list[Path] = []
    model = _zip(run_dir, "train", output_path(run_dir, "train", "model"), "model")
    if model:
        files.append(model)
    if rd.is_complete("export"):
        onnx = output_path(run_dir, "export", "onnx")
        files += sorted(onnx.glob("onnx/*.onnx")) + sorted(onnx.glob("*.onnx"))
    if rd.is_complete("evaluate"):
        for name in ("report.md", "report.json"):
            p = output_path(run_dir, "evaluate", name)
            if p.is_file():
                files.append(p)
        files += sorted(output_path(run_dir, "evaluate", "plots").glob("*.png"))
    if rd.is_complete("publish"):
        push = output_path(run_dir, "publish", "PUSH.md")
        if push.is_file():
            files.append(push)
        sub = _zip(run_dir, "publish", output_path(run_dir, "publish", "submission"), "leaderboard-submission")
        if sub:
            files.append(sub)
    return files


def pushed_links(run_dir: str | Path, endpoint: str | None = None) -> list[tuple[str, str]]:
    """(repo id, URL) of every repository the publish stage pushed."""
    if _shared is not None and hasattr(_shared, "pushed_links"):
        return list(_shared.pushed_links(run_dir))
    path = output_path(run_dir, "publish", "pushed.json")
    try:
        pushed = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    base = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    links = []
    for kind, info in pushed.items():
        repo_id = info.get("repo_id") if isinstance(info, dict) else None
        if repo_id:
            repo_type = info.get("repo_type") or ("model" if kind == "model" else "dataset")
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            links.append((repo_id, f"{base}/{prefix}{repo_id}"))
    return links
