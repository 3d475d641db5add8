"""Where shared evaluation data lives: one setting, DOMAIN_EMBED_DATA (default ../shared/data)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from trainer.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ENV = "DOMAIN_EMBED_DATA"


def data_dir() -> Path:
    """The shared data folder: $DOMAIN_EMBED_DATA, else ../shared/data beside the repository.

    It may not exist (a user's machine): callers that need it check, or use ``data_path``.
    """
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else (REPO_ROOT.parent / "shared" / "data")


def data_path(name: str) -> Path:
    """A named dataset folder under ``data_dir()``, with an actionable error when absent."""
    path = data_dir() / name
    if not path.exists():
        raise InputError(
            f"data folder {name!r} not found at {path}. Set {DATA_ENV} to the folder that holds it "
            f"(BEIR layout: corpus.jsonl, queries.jsonl, qrels/), or give a path instead of 'data:{name}'."
        )
    return path


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def find_local_folder(task_name: str, root: str | Path | None = None) -> Path | None:
    """The BEIR folder of an MTEB task under ``data_dir()`` (or ``root``), matched by normalised name
    (SciFact -> scifact, AILAStatutes -> aila_statutes), if there is one."""
    root = Path(root) if root else data_dir()
    if not root.is_dir():
        return None
    for p in sorted(root.iterdir()):
        if _key(p.name) == _key(task_name) and (p / "corpus.jsonl").is_file():
            return p
    return None
