"""Logging to the console and the run directory, with secrets redacted from every record."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

LOGGER_NAME = "trainer"
_TOKEN_RE = re.compile(r"\b(hf_[A-Za-z0-9]{8,}|api_org_[A-Za-z0-9]{8,})\b")
_SECRET_ENVS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACEHUB_API_TOKEN")


def redact(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """Replace Hub tokens (by shape, and the values of the token variables) with '***'."""
    text = _TOKEN_RE.sub("***", text)
    for secret in extra_secrets + tuple(os.environ.get(n, "") for n in _SECRET_ENVS):
        if secret and len(secret) >= 8:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def get_logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
        logger.setLevel(logging.INFO)
    return logger


def setup_console(verbose: bool = False) -> None:
    logger = get_logger()
    if not any(getattr(h, "_trainer_console", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler.addFilter(RedactingFilter())
        handler._trainer_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def attach_run_log(run_dir: Path) -> logging.Handler:
    """Append this process's log records to <run_dir>/run.log; returns the handler to detach."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    get_logger().addHandler(handler)
    return handler
