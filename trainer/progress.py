"""One progress hook for every stage: counters in, a bar out (CLI) and ``<run>/progress.json`` (the Space).

A stage reports its own counter through ``ctx.advance(done, total, unit=...)``; the hook adds the rate
and the ETA, writes the latest state atomically to the run directory (at most twice a second, and always
at the end of a count) and hands it to any sinks (the CLI's bar). Readers call :func:`read_progress`.

Example::

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> hook = ProgressHook(root, "generate")
    >>> hook.update(3, 12, unit="queries")
    >>> read_progress(root).done
    3.0
    >>> format_bar(read_progress(root)).startswith("generate")
    True
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from trainer.files import write_json_atomic

PROGRESS_FILE = "progress.json"
WRITE_EVERY_S = 0.5


@dataclass
class Progress:
    stage: str
    label: str  # what is counted: "queries", "steps", "tasks", ...
    done: float
    total: float | None
    unit: str
    started: float  # when this count started (first update of the label)
    updated: float
    rate_per_min: float | None = None
    eta_s: float | None = None
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"loss": 0.41}

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None


Sink = Callable[[Progress], None]


class ProgressHook:
    """Progress of one stage in one run directory."""

    def __init__(self, run_root: str | Path, stage: str, sinks: tuple[Sink, ...] = ()):
        self.path = Path(run_root) / PROGRESS_FILE
        self.stage = stage
        self.sinks = sinks
        self._label: str | None = None
        self._first: tuple[float, float] = (0.0, 0.0)  # (time, done) at the first update of the label
        self._written = 0.0
        self._unwritten: Progress | None = None  # the latest state, when the throttle held it back

    def start(self, message: str = "starting") -> None:
        """Say that the stage started (before its first count), so readers do not show the previous stage's bar."""
        now = time.time()
        self._label = None
        self._write(Progress(self.stage, "", 0.0, None, "", now, now, message=message))
        self._written = 0.0  # the first count is written at once

    def update(self, done: float, total: float | None = None, *, unit: str = "items", label: str | None = None,
               message: str = "", **extra: Any) -> None:
        now = time.time()
        label = label or unit
        if label != self._label or done < self._first[1]:
            self._label, self._first = label, (now, float(done))
        t0, d0 = self._first
        elapsed = now - t0
        rate = (done - d0) / elapsed * 60 if elapsed > 1 and done > d0 else None
        eta = (total - done) / rate * 60 if rate and total is not None and total >= done else None
        p = Progress(self.stage, label, float(done), None if total is None else float(total), unit, t0, now,
                     None if rate is None else round(rate, 2), None if eta is None else round(eta, 1),
                     message, extra)
        for sink in self.sinks:
            sink(p)
        final = total is not None and done >= total
        if final or now - self._written >= WRITE_EVERY_S:
            self._write(p)
        else:
            self._unwritten = p

    def flush(self) -> None:
        """Write the latest state if the throttle held it back (the stage calls this when it ends)."""
        if self._unwritten is not None:
            self._write(self._unwritten)

    def _write(self, p: Progress) -> None:
        self._written, self._unwritten = time.time(), None
        write_json_atomic(self.path, asdict(p))


def read_progress(run_root: str | Path) -> Progress | None:
    """The latest progress written in a run directory, or None (none yet, or an unreadable file)."""
    try:
        return Progress(**json.loads((Path(run_root) / PROGRESS_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '2.5 h': for ETAs and estimates shown to a person."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_bar(p: Progress, width: int = 24) -> str:
    """One line: ``generate [#####.....] 120/600 queries · 14.2 queries/min · ETA 33 min · loss 0.41``."""
    if not p.label:  # started, nothing counted yet
        return f"{p.stage}: {p.message}" if p.message else p.stage
    parts = [p.stage]
    if p.fraction is not None:
        filled = round(width * p.fraction)
        parts.append("[" + "#" * filled + "." * (width - filled) + "]")
    count = f"{p.done:g}/{p.total:g}" if p.total is not None else f"{p.done:g}"
    parts.append(f"{count} {p.unit}")
    tail = [p.message] if p.message else []
    if p.rate_per_min is not None:
        tail.append(f"{p.rate_per_min:.1f} {p.unit}/min")
    if p.eta_s is not None:
        tail.append(f"ETA {format_duration(p.eta_s)}")
    tail += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in p.extra.items()]
    line = " ".join(parts)
    return " · ".join([line, *tail]) if tail else line


class ConsoleBar:
    """The CLI's sink: one line on ``stream``. On a terminal it is redrawn in place (``\\r``, at most 5 times a
    second); otherwise (a log file such as the Space's job.log) a full line is printed when a count starts,
    when it ends and every ``every_s`` seconds in between, so the file gets periodic lines, not a flood.

    Log records must not land in the middle of the bar: the console's log handler calls :meth:`clear` first.
    """

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, every_s: float = 10.0):
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty()) if tty is None else tty
        self.every_s = 0.2 if self.tty else every_s
        self._shown = ""  # the bar on screen (terminal only)
        self._last = 0.0
        self._key: tuple[str, str] | None = None
        self._ended: tuple[str, str] | None = None  # a count whose final line was printed
        self._lock = threading.Lock()

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        key = (p.stage, p.label)
        final = p.total is not None and p.done >= p.total
        if key == self._key and ((now - self._last < self.every_s and not final) or key == self._ended):
            return
        self._key, self._last = key, now
        self._ended = key if final else None
        line = format_bar(p)
        with self._lock:
            if self.tty:
                width = max(len(self._shown), len(line))
                self.stream.write("\r" + line.ljust(width))
                self._shown = line
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def clear(self) -> None:
        """Erase the bar from the terminal line (before a log record is printed); the next update redraws it."""
        with self._lock:
            if self.tty and self._shown:
                self.stream.write("\r" + " " * len(self._shown) + "\r")
                self.stream.flush()
                self._shown = ""
                self._key = None  # redraw at the next update
