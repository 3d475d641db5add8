"""Small file helpers every stage shares: atomic writes, content hashes, a free loopback port.

A stage's outputs are written so that a killed process never leaves half a file or half a folder
behind: text and JSON go to ``<name>.tmp`` and are renamed over the target; folders are built under
``<name>.tmp`` and swapped in once complete (``atomic_dir``).

Example::

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_json_atomic(d / "a.json", {"b": 1})
    >>> (d / "a.json").read_text()
    '{\\n  "b": 1\\n}'
    >>> with atomic_dir(d / "out") as tmp:
    ...     _ = (tmp / "x.txt").write_text("done")
    >>> sorted(p.name for p in d.iterdir())
    ['a.json', 'out']
    >>> fingerprint(d / "out") == fingerprint(d / "out")
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield an empty ``<dest>.tmp`` folder to fill; on success it replaces ``dest`` (on error it is removed)."""
    tmp = dest.with_name(dest.name + TMP_SUFFIX)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(path: Path, skip: Iterable[str] = ()) -> str:
    """sha256 of a file, or of a folder's relative paths and contents (names in ``skip``, temporary
    ``*.tmp`` entries and anything under a ``_work`` folder left out)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    skip = set(skip)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if rel.parts[0] == "_work" or rel.name in skip or rel.name.endswith(TMP_SUFFIX):
            continue
        digest.update(str(rel).encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
