"""Hub naming and the Hub token, shared by the publish stage and the train stage's checkpoint pushes.

Example::

    >>> from trainer.config import load_config
    >>> cfg = load_config(None, ["publish.owner=me", "run.dir=runs/quickstart", "domain=legal"])
    >>> repo_ids(cfg, "me")["model"]
    'me/all-MiniLM-L6-v2-legal-quickstart'
    >>> checkpoint_hub_kwargs(cfg)
    {'push_to_hub': False}
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainer.config import Config
from trainer.models import is_offline

KINDS = ("queries", "training_set", "model")  # push order: the model card links the datasets
SUFFIXES = {"queries": "-queries", "training_set": "-training-set", "model": ""}
OWNER_PLACEHOLDER = "YOUR_HF_USERNAME"


def _slug(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    text = re.sub(r"[-.]{2,}", "-", text).strip("-.")
    return text[:80] or "model"


def default_name(cfg: Config) -> str:
    """<base model>-<domain>-<run dir name>, e.g. all-MiniLM-L6-v2-legal-quickstart."""
    base = Path(cfg.model.name.rstrip("/")).name
    return _slug(f"{base}-{cfg.domain}-{Path(cfg.run.dir).name}")


def repo_ids(cfg: Config, owner: str | None) -> dict[str, str]:
    name = _slug(cfg.publish.name) if cfg.publish.name else default_name(cfg)
    owner = owner or OWNER_PLACEHOLDER
    return {kind: f"{owner}/{name}{SUFFIXES[kind]}" for kind in KINDS}


def hub_token(cfg: Config) -> str | None:
    value = os.environ.get(cfg.publish.token_env, "").strip()
    return value or None


def checkpoint_hub_kwargs(cfg: Config, owner: str | None = None) -> dict[str, Any]:
    """SentenceTransformerTrainingArguments kwargs for ``publish.push_checkpoints`` (the train stage passes them).

    Checkpoints go to their own repo ``<owner>/<name>-checkpoints`` (private with publish.private), never to the
    model repo the publish stage writes, with ``hub_strategy="checkpoint"``: each save pushes the model files to
    the repo root and the whole resumable checkpoint (optimizer, scheduler, trainer state) to
    ``last-checkpoint/``. Without a token, offline, or with the setting off: ``{"push_to_hub": False}``. The
    token is never one of these kwargs: the trainer pickles its arguments into every checkpoint
    (training_args.bin, pushed with it); huggingface_hub reads it from HF_TOKEN (see :func:`hub_token_env`).
    """
    token = hub_token(cfg)
    if not cfg.publish.push_checkpoints or token is None or is_offline():
        return {"push_to_hub": False}
    if owner is None and cfg.publish.owner is None:
        from huggingface_hub import HfApi

        owner = HfApi(token=token).whoami()["name"]
    model_id = repo_ids(cfg, owner or cfg.publish.owner)["model"]
    return {"push_to_hub": True, "hub_model_id": f"{model_id}-checkpoints", "hub_strategy": "checkpoint",
            "hub_private_repo": cfg.publish.private}


@contextlib.contextmanager
def hub_token_env(cfg: Config) -> Iterator[None]:
    """HF_TOKEN holds the token of ``$<publish.token_env>`` inside the block (when that is another variable),
    for huggingface_hub calls made without a token argument (the trainer's checkpoint pushes)."""
    token = hub_token(cfg)
    if cfg.publish.token_env == "HF_TOKEN" or token is None:
        yield
        return
    before = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = token
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_TOKEN", None)
        else:
            os.environ["HF_TOKEN"] = before
