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
- ``DOMAIN_EMBED_SPACE_SHARE_TOKEN``: whether visitors who are not signed in may use the Space's own
  ``HF_TOKEN`` secret (to publish, or to pay for Inference Providers / Endpoints). Default: only off a Space
  and on a private Space (a duplicated private Space is its owner's); never on a public one.

Example::

    >>> owner_key("Jane-Doe", "")
    'user-Jane-Doe'
    >>> owner_key(None, "0" * 32)
    'anon-00000000000000000000000000000000'
    >>> owner_key(None, "../../etc") is None
    True
"""

from __future__ import annotations

import functools
import os
import re
import secrets
from pathlib import Path

from trainer.logs import HUB_TOKEN_ENVS
from trainer.paths import REPO_ROOT

ANON_PREFIX, USER_PREFIX = "anon-", "user-"
_SESSION_RE = re.compile(r"^[0-9a-f]{32}$")
_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


@functools.cache
def share_space_token() -> bool:
    """May a visitor who is not signed in use this server's ``HF_TOKEN``? Yes off a Space and on a private
    Space; no on a public one (or when its visibility cannot be checked). ``DOMAIN_EMBED_SPACE_SHARE_TOKEN``
    (1/0) decides instead when set."""
    forced = os.environ.get("DOMAIN_EMBED_SPACE_SHARE_TOKEN", "").strip().lower()
    if forced:
        return forced in ("1", "true", "yes")
    space = os.environ.get("SPACE_ID")
    if not space:
        return True
    token = os.environ.get("HF_TOKEN")
    if not token:
        return False
    try:
        from huggingface_hub import HfApi

        return bool(HfApi().space_info(space, token=token).private)
    except Exception:  # noqa: BLE001 -- unknown visibility: treat it as public
        return False


def job_token_env(user_token: str | None, token_vars: tuple[str, ...] = ()) -> dict[str, str | None] | None:
    """The extra environment of a visitor's job: the signed-in user's token in every token variable the job
    reads, or, for a visitor not signed in on a public Space, those variables removed (None)."""
    names = tuple(dict.fromkeys((*HUB_TOKEN_ENVS, *token_vars)))
    if user_token is not None:
        return dict.fromkeys(names, user_token)
    return None if share_space_token() else dict.fromkeys(names)


def check_endpoint_url(url: str) -> None:
    """On the Space a visitor's endpoint URL must be https and not point at this machine or a private network."""
    import ipaddress
    from urllib.parse import urlparse

    from trainer.errors import TrainerError

    parsed = urlparse(url.strip())
    host = (parsed.hostname or "").lower()
    if parsed.scheme != "https" or not host:
        raise TrainerError(f"endpoint URL {url!r}: on the Space, use an https:// URL (e.g. your Inference Endpoint's)")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if host == "localhost" or host.endswith((".local", ".internal")) or (
            ip is not None and (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved)):
        raise TrainerError(f"endpoint URL {url!r}: addresses on this machine or a private network are not "
                           "available on the Space")


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
ALLOW_REGRESSION_BOX = "the Publish tab's box “Publish even if it is worse than the base model”"
_CLI_TO_SPACE = [
    (re.compile(r"`?python -m trainer config --explain`?"), "the README's configuration reference"),
    (re.compile(r"`?python -m trainer run --to (\w+)[^`\n]*`?"), r"the \1 step's Run button"),
    (re.compile(r"`?python -m trainer (\w+) --force`?"), r"the \1 step's Run button (it asks before re-running)"),
    (re.compile(r"`?python -m trainer (\w+)[^`\n]*`?"), r"the \1 step's Run button"),
    (re.compile(r"`?--force`?"), "the step's Run button again (it asks before re-running)"),
    (re.compile(r"`?--source( PATH)?`?"), "the Corpus box (Data tab)"),
    (re.compile(r"`?(--set )?publish\.allow_regression=true`?"), ALLOW_REGRESSION_BOX),
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
