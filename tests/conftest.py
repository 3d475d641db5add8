"""Shared fixtures. The suite runs offline: the Hub is never contacted (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# The embedded generator is llama-cpp-python's server in tests (as on a machine without a built llama-server);
# tests/test_llm_server.py turns llama.cpp's own server on where one is built.
os.environ.setdefault("DOMAIN_EMBED_LLAMA_SERVER", "off")

from trainer.paths import data_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def shared_data() -> Path:
    path = data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path} (set DOMAIN_EMBED_DATA)")
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m trainer ...`` in a fresh process, as a user would."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli
