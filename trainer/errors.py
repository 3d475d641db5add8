"""User-facing errors: the CLI and the Space print their message, never a traceback."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

_RUN_DIR = "choose another run directory (--run-dir DIR, or run.dir=DIR)"
_RESUME = "then run the same command again: finished stages are kept and the interrupted one resumes"

# What the user can do about an OSError that comes from the disk, not from a bug.
DISK_FIXES: dict[int, str] = {
    errno.ENOSPC: f"the disk is full: free some space, or move the run to a larger disk (--run-dir DIR); {_RESUME}",
    errno.EDQUOT: f"the disk quota is used up: free some space, or move the run (--run-dir DIR); {_RESUME}",
    errno.EACCES: f"permission denied: make it readable and writable for this user, or {_RUN_DIR}",
    errno.EPERM: f"operation not permitted: make it writable for this user, or {_RUN_DIR}",
    errno.EROFS: f"the file system is read-only: {_RUN_DIR}",
    errno.EEXIST: f"a file is in the way where a folder is needed: move it away, or {_RUN_DIR}",
    errno.ENOTDIR: f"a part of this path is a file, not a folder: {_RUN_DIR}",
    errno.EISDIR: "a folder is in the way where a file is needed: move it away, or give the path of a file",
    errno.EIO: f"the disk reported an I/O error: check the disk (dmesg); {_RESUME}",
}


class TrainerError(Exception):
    """An error the user can act on; its message says what is wrong and how to fix it."""


class ConfigError(TrainerError):
    """The configuration is invalid."""


class InputError(TrainerError):
    """The corpus or another input cannot be used."""


class ModelResolutionError(TrainerError):
    """A model name could not be mapped to weights."""


class StageError(TrainerError):
    """A stage cannot run (missing upstream output, refused overwrite, ...)."""


class StorageError(TrainerError):
    """A file or folder could not be written or read: a full disk, no permission, a file in the way, ..."""


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it was raised from or during (``__cause__`` / ``__context__``), each once."""
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        yield node
        node = node.__cause__ or node.__context__


def disk_error(exc: BaseException) -> StorageError | None:
    """The StorageError, with its fix, for an OSError of the disk (ENOSPC, EACCES, EEXIST, ENOTDIR, ...) in
    ``exc`` or what it was raised from (libraries re-wrap them); None for anything else (a bug keeps its
    traceback)."""
    for cur in exception_chain(exc):
        if isinstance(cur, OSError):
            code = cur.errno
            if code is None and "No space left on device" in str(cur):  # pyarrow and others drop the errno
                code = errno.ENOSPC
            if code in DISK_FIXES:
                paths = " -> ".join(str(p) for p in (cur.filename, cur.filename2) if p is not None)
                return StorageError(f"{os.strerror(code)}{f' ({paths})' if paths else ''}: {DISK_FIXES[code]}")
    return None
