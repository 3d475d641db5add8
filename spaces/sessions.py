"""Who a visitor is, where their runs live, and how messages are worded for them.

Every visitor of the Space is an *owner*: a signed-in Hugging Face user (``user-<name>``) or an anonymous
browser session (``anon-<32 hex>``, a random id the browser keeps in local storage). Each owner has one
folder ``<root>/<owner>/`` with its job state and its run directory ``run/``; the job pool
(``trainer.jobs.JobPool``) runs at most ``DOMAIN_EMBED_SPACE_MAX_JOBS`` jobs at once.

Settings (environment variables):

- ``DOMAIN_EMBED_SPACE_ROOT``: where owners' folders live. Default: ``/data/domain-embed`` when ``/data``
  (a Space's persistent storage) exists and is writable, else ``runs/space`` in the repository.
- ``DOMAIN_EMBED_SPACE_MAX_JOBS``: jobs running at once on this machine (default 1); the rest queue.
- ``DOMAIN_EMBED_SPACE_ANON_TTL_H``: hours after which an idle anonymous session's folder is deleted
  (default 24; signed-in users' folders are kept).

Example::

    >>> owner_key("Jane-Doe", "")
    'user-Jane-Doe'
    >>> owner_key(None, "0" * 32)
    'anon-00000000000000000000000000000000'
    >>> owner_key(None, "../../etc") is None
    True
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from trainer.paths import REPO_ROOT

ANON_PREFIX, USER_PREFIX = "anon-", "user-"
_SESSION_RE = re.compile(r"^[0-9a-f]{32}$")
_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def storage_root() -> Path:
    """Where every owner's folder lives (see the module docstring)."""
    if os.environ.get("DOMAIN_EMBED_SPACE_ROOT"):
        return Path(os.environ["DOMAIN_EMBED_SPACE_ROOT"])
    data = Path("/data")
    if data.is_dir() and os.access(data, os.W_OK):
        return data / "domain-embed"
    return REPO_ROOT / "runs" / "space"


def max_jobs() -> int:
    return max(1, int(os.environ.get("DOMAIN_EMBED_SPACE_MAX_JOBS", "1")))


def anon_ttl_s() -> float:
    return float(os.environ.get("DOMAIN_EMBED_SPACE_ANON_TTL_H", "24")) * 3600


def new_session_id() -> str:
    return secrets.token_hex(16)


def owner_key(username: str | None, session_id: str | None) -> str | None:
    """The owner's folder name: from the signed-in user, else from the browser's session id; None when
    neither is usable (a tampered id is never turned into a path)."""
    if username:
        if not _USER_RE.match(username) or ".." in username:
            return None
        return USER_PREFIX + username
    if session_id and _SESSION_RE.match(session_id):
        return ANON_PREFIX + session_id
    return None


# CLI wording -> Space wording, for messages the pipeline writes (errors, logs, PUSH.md excerpts).
_CLI_TO_SPACE = [
    (re.compile(r"`?python -m trainer config --explain`?"), "the README's configuration reference"),
    (re.compile(r"`?python -m trainer run --to (\w+)[^`\n]*`?"), r"the \1 step's Run button"),
    (re.compile(r"`?python -m trainer (\w+) --force`?"), r"the \1 step's Run button (it asks before re-running)"),
    (re.compile(r"`?python -m trainer (\w+)[^`\n]*`?"), r"the \1 step's Run button"),
    (re.compile(r"`?--force`?"), "the step's Run button again (it asks before re-running)"),
    (re.compile(r"`?--source( PATH)?`?"), "the Corpus box (Data tab)"),
    (re.compile(r"`?--set ([\w.]+=[^`\s]*)`?"), r"Advanced settings: \1"),
    (re.compile(r"\(run\.dir=\.\.\.\)|run\.dir=\S+"), "the Space's run folder"),
]


def for_visitor(text: str, *paths: str | Path) -> str:
    """A message as a Space visitor should read it: Space controls instead of CLI commands, and no server
    paths (``paths``, the storage root and the repository are replaced by short names).

    >>> for_visitor("run `python -m trainer ingest --force` in /srv/x/run", "/srv/x/run")
    "run the ingest step's Run button (it asks before re-running) in your run"
    """
    for pattern, repl in _CLI_TO_SPACE:
        text = pattern.sub(repl, text)
    named = [(str(p), "your run") for p in paths if str(p)]
    named += [(str(storage_root()), "the Space's storage"), (str(REPO_ROOT), "the app")]
    for path, name in sorted(named, key=lambda x: len(x[0]), reverse=True):
        text = text.replace(path, name)
    return text
