"""Writes to storage tried again, with backoff, when the error is one that passes.

A run of hours on an object store meets a timeout, a dropped connection or a "503 slow down" now
and then. The filesystem layers retry some of these themselves (s3fs retries each call up to its
``retries``, 5 by default, and botocore has its own ``retries`` config; gcsfs retries too), but
what still comes through, and whatever a filesystem without its own retries raises, would fail a
block that a second try would have saved. So every write of tilepipe's own (chunks, block records,
attributes, the lease, summaries, the pyramid) goes through :func:`retried`: a transient error is
tried again after :data:`FIRST_DELAY` seconds, doubled each time, :data:`ATTEMPTS` tries in all;
an error that persists, or one that is not transient (a full disk, a missing permission), is
raised as it is, and fails its block or its run as before.

Every write tilepipe makes is idempotent (a whole chunk, a whole attribute document, a whole
file), so trying it again after a failure that may have half happened is safe. Each retry is
counted (:class:`RetryCount`), and the run summary says how many there were.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import Counter
from typing import Callable, Hashable, TypeVar

from .errors import fault_line

log = logging.getLogger("tilepipe")

T = TypeVar("T")
ATTEMPTS = 5
FIRST_DELAY = 0.1
"""Seconds before the second try, doubled before each next: 1.5 s of waiting in all."""
TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED,
                              errno.ECONNREFUSED, errno.EPIPE, errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTUNREACH,
                              getattr(errno, "EREMOTEIO", errno.EIO)})
"""What s3fs makes of "503 slow down" (EBUSY) and "500 internal error" (EREMOTEIO), and the
network's own passing failures."""


def is_transient(exc: BaseException) -> bool:
    """An error that a later try may not meet: a timeout, a lost connection, a busy service."""
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


class RetryCount:
    """Retries counted by key (a block's index, or None for the rest), from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: Counter = Counter()

    def add(self, key: Hashable = None) -> None:
        with self._lock:
            self._counts[key] += 1

    def take(self, key: Hashable = None) -> int:
        """The retries counted under ``key`` since the last take."""
        with self._lock:
            return self._counts.pop(key, 0)


def retried(action: Callable[[], T], what: str, count: RetryCount | None = None, key: Hashable = None) -> T:
    """``action()``, tried again on a transient error (see the module); ``what`` names the write
    in the log, each retry is added to ``count`` under ``key``."""
    delay = FIRST_DELAY
    for attempt in range(1, ATTEMPTS):
        try:
            return action()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.debug("%s: %s; try %d of %d in %.1f s", what, fault_line(exc), attempt + 1, ATTEMPTS, delay)
            if count is not None:
                count.add(key)
            time.sleep(delay)
            delay *= 2
    return action()  # the last try: what it raises is the write's error
