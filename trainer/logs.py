"""Logging to the console and the run directory, with secrets redacted from every record.

Redaction knows token shapes (Hugging Face, OpenAI/Anthropic ``sk-``, GitHub, Slack, AWS, JWTs),
credentials in text (``Bearer x``, ``Authorization: ...``, URL userinfo ``scheme://user:pass@``, ``?api_key=...``), long
random-looking strings (mixed case and digits, high entropy), the values of the Hub token variables and
any value passed to :func:`register_secret` (e.g. an endpoint's token read from ``generate.token_env``).

Example::

    >>> redact("GET https://bob:s3cretpass@host/v1?api_key=abc12345 with Bearer tok3n-value")
    'GET https://***@host/v1?api_key=*** with Bearer ***'
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

LOGGER_NAME = "trainer"
HUB_TOKEN_ENVS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACEHUB_API_TOKEN")
_TOKEN_RE = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{8,}|api_org_[A-Za-z0-9]{8,}"  # Hugging Face
    r"|sk-[A-Za-z0-9_\-]{16,}"  # OpenAI, Anthropic (sk-ant-...), most OpenAI-compatible servers
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*)"  # JWT
)
_AUTH_RE = re.compile(r"\b(Bearer|[Aa]uthorization:\s*(?:[A-Za-z]+\s+)?)\s*[A-Za-z0-9._~+/=\-]{8,}")
_USERINFO_RE = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@]+@")
_QUERY_RE = re.compile(
    r"([?&](?:access_token|api[_\-]?key|key|token|auth|password|secret|sig|signature|code)=)[^&#\s]+", re.IGNORECASE
)
_RUN_RE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{24,}(?![A-Za-z0-9])")
_registered: set[str] = set()


def _looks_random(run: str) -> bool:
    """A long run of letters and digits that reads like a generated key: mixed case, digits, high entropy
    (hex digests are single-case, identifiers such as model names have low entropy for their length)."""
    if not (any(c.islower() for c in run) and any(c.isupper() for c in run) and any(c.isdigit() for c in run)):
        return False
    counts = Counter(run)
    entropy = -sum(n / len(run) * math.log2(n / len(run)) for n in counts.values())
    return entropy >= 0.8 * math.log2(min(len(run), 62))


def register_secret(value: str | None) -> None:
    """Redact this value from every later record of this process (an endpoint's token, say)."""
    if value and len(value) >= 8:
        _registered.add(value)


def known_secrets(extra: tuple[str, ...] = ()) -> list[str]:
    """The secret values this process knows: ``extra``, the Hub token variables, registered ones (longest first)."""
    values = {*extra, *(os.environ.get(n, "") for n in HUB_TOKEN_ENVS), *_registered}
    return sorted((v for v in values if v and len(v) >= 8), key=len, reverse=True)


def redact(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """Replace secrets (known values, then token shapes, credentials and random-looking keys) with '***'."""
    for secret in known_secrets(extra_secrets):
        text = text.replace(secret, "***")
    text = _USERINFO_RE.sub(r"\1***@", text)
    text = _QUERY_RE.sub(r"\1***", text)
    text = _AUTH_RE.sub(lambda m: f"{m.group(1).rstrip()} ***", text)
    text = _TOKEN_RE.sub("***", text)
    return _RUN_RE.sub(lambda m: "***" if _looks_random(m.group()) else m.group(), text)


def looks_like_secret(text: str, *, heuristic: bool = True) -> bool:
    """Whether ``text`` holds something :func:`redact` would hide; ``heuristic=False`` leaves out the
    random-looking-string rule (for files where false alarms would block work, such as cards)."""
    if not heuristic:
        return any(s in text for s in known_secrets()) or any(
            r.search(text) for r in (_USERINFO_RE, _QUERY_RE, _AUTH_RE, _TOKEN_RE))
    return redact(text) != text


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


def setup_console(verbose: bool = False) -> logging.Handler:
    """The console handler of the ``trainer`` logger (stderr), added once; returns it."""
    logger = get_logger()
    handler = next((h for h in logger.handlers if getattr(h, "_trainer_console", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler.addFilter(RedactingFilter())
        handler._trainer_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Our lines are printed here: a stderr handler that a library puts on the root logger (onnxruntime's
    # quantizer calls logging.info, i.e. logging.basicConfig) must not print them a second time.
    logger.propagate = False
    return handler


def attach_run_log(run_dir: Path) -> logging.Handler:
    """Append this process's log records to <run_dir>/run.log; returns the handler to detach."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    get_logger().addHandler(handler)
    return handler


# Libraries that print through a stderr handler of their own (the others propagate to the root logger).
_SELF_PRINTING = ("transformers", "datasets")
WARNINGS_FILE = "warnings.log"


class LibraryWarnings:
    """Where library warnings went during :func:`library_warnings`: ``count`` records, to ``path`` (or stderr)."""

    def __init__(self, path: Path | None):
        self.path = path
        self.count = 0

    def _counting(self, record: logging.LogRecord) -> bool:
        self.count += 1
        return True


@contextlib.contextmanager
def library_warnings(run_dir: Path, verbose: bool = False) -> Iterator[LibraryWarnings]:
    """Keep library warnings (``warnings.warn`` of torch, transformers, ...; the loggers of transformers, datasets,
    sentence-transformers, mteb, onnxruntime, ...) out of the console and the run log: they go to
    ``<run_dir>/warnings.log`` (to stderr with ``verbose``). The ``trainer`` logger stops propagating to the root
    logger meanwhile: a library that configures the root logger (onnxruntime's quantizer calls
    ``logging.info``, which installs a stderr handler on first use) would otherwise print every line twice.
    Everything is put back on exit.
    """
    import warnings

    ours = get_logger()
    root = logging.getLogger()
    saved = {"propagate": ours.propagate, "root_level": root.level, "libs": {}, "filters": warnings.filters[:]}
    for name in _SELF_PRINTING:  # configure them now (as their import would), then route them to the root
        with contextlib.suppress(ImportError):
            __import__(f"{name}.utils.logging", fromlist=["get_logger"]).get_logger(name)
        lib = logging.getLogger(name)
        own = [h for h in lib.handlers if type(h) is logging.StreamHandler]
        saved["libs"][name] = (own, lib.propagate)
        for h in own:
            lib.removeHandler(h)
        lib.propagate = True
    result = LibraryWarnings(None if verbose else Path(run_dir) / WARNINGS_FILE)
    if result.path is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.FileHandler(result.path, encoding="utf-8", delay=True)  # created on the first warning
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.WARNING)
    handler.addFilter(RedactingFilter())
    handler.addFilter(result._counting)
    ours.propagate = False
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    warnings.simplefilter("default")  # each distinct warning once per location, as Python's default does
    try:
        yield result
    finally:
        logging.captureWarnings(False)
        warnings.filters[:] = saved["filters"]
        root.removeHandler(handler)
        handler.close()
        root.setLevel(saved["root_level"])
        ours.propagate = saved["propagate"]
        for name, (own, propagate) in saved["libs"].items():
            lib = logging.getLogger(name)
            for h in own:
                lib.addHandler(h)
            lib.propagate = propagate
