"""Fault injection for resume tests: DOMAIN_EMBED_CRASH_AT=<point> kills the process (SIGKILL) there.

A SIGKILL cannot be caught, so what the test sees is what a power cut or an OOM kill leaves behind.
"""

from __future__ import annotations

import os
import signal

ENV = "DOMAIN_EMBED_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
