"""One retry policy for every outside call (the LLM endpoint, the Hub): what is worth retrying, and how
long to wait before the next attempt.

Retried: HTTP 408, 409, 412, 425, 429 and 5xx (but 501 and 505), timeouts and connection errors. Not
retried: other 4xx and 501/505 (a bad request, a refused token or a missing route does not get better
by asking again). The wait doubles from
``backoff_s`` up to ``max_backoff_s``, with +/-25% jitter so parallel workers do not retry in step, and
never less than a server's ``Retry-After`` (capped at ``max_backoff_s``).

Example::

    >>> policy = RetryPolicy(max_retries=3, backoff_s=1.0, max_backoff_s=8.0, jitter=False)
    >>> [policy.delay(a) for a in range(5)]
    [1.0, 2.0, 4.0, 8.0, 8.0]
    >>> policy.delay(0, retry_after="5")
    5.0
    >>> is_retryable_status(503), is_retryable_status(404), is_retryable_status(501)
    (True, False, False)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from trainer.errors import exception_chain

RETRY_STATUSES = frozenset({408, 409, 412, 425, 429})
NEVER_RETRIED_5XX = frozenset({501, 505})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    jitter: bool = True

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        if self.jitter:
            delay *= 0.75 + 0.5 * random.random()
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.max_backoff_s))
            except ValueError:  # an HTTP date: keep the backoff
                pass
        return delay


def is_retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES or (500 <= status < 600 and status not in NEVER_RETRIED_5XX)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of the response behind an exception (or its causes), if any."""
    for node in exception_chain(exc):
        status = getattr(getattr(node, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
    return None


def retry_after(exc: BaseException) -> str | None:
    for node in exception_chain(exc):
        response = getattr(node, "response", None)
        if response is not None and getattr(response, "headers", None) is not None:
            return response.headers.get("Retry-After")
    return None


def is_connection_error(exc: BaseException) -> bool:
    import requests

    return any(isinstance(n, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError)
               for n in exception_chain(exc))


def is_retryable(exc: BaseException) -> bool:
    status = http_status(exc)
    return is_retryable_status(status) if status is not None else is_connection_error(exc)
