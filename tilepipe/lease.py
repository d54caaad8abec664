"""One writer per store: a lease file beside the store, renewed while its run is live.

``scene_mask.zarr`` is guarded by ``scene_mask.lease.json`` (beside it, like the summary files,
so that replacing the store with ``--overwrite`` cannot remove the lease of a live run). The
file names its holder: run id, host, process id, when it started and when it was last renewed.
It is created exclusively (``open(..., "xb")``, through fsspec, so local paths and fsspec URLs
such as ``memory://`` behave alike), renewed by a daemon thread every :data:`RENEW_SECONDS`, and
removed when the run ends, however it ends.

A second writer (a run, an ``--overwrite`` or a ``--resume``) finds the file and is refused with
the holder's name. A holder is taken to be dead, and its lease may be taken over, when it was not
renewed for :data:`TIMEOUT_SECONDS`, or at once when it ran on this host and its process is gone.
A run whose lease was taken over finds out at its next block: the store then carries the new
run's id, and :class:`tilepipe.sink.MaskStore` refuses to write for any other run.

Its creation, reading and removal are retried on transient errors (:mod:`tilepipe.retry`; a renewal
that fails is simply made again at the next beat). A create whose reply was lost
may have happened: the lease found then names this run, and is taken as created. Releasing never
raises: a lease that cannot be removed expires (the run that ends says so in the log).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from .errors import TilepipeError, fault_line, first_line
from .retry import RetryCount, retried
from .sink import beside

log = logging.getLogger("tilepipe")

TIMEOUT_SECONDS = 60.0
"""A lease not renewed for this long belongs to a dead run and can be taken over."""
RENEW_SECONDS = 10.0


@dataclass(frozen=True)
class Holder:
    run_id: str
    host: str
    pid: int
    started: float
    renewed: float

    @classmethod
    def this_process(cls, run_id: str, started: float | None = None) -> Holder:
        now = time.time()
        return cls(run_id, socket.gethostname(), os.getpid(), started or now, now)

    def is_dead(self, now: float) -> bool:
        if now - self.renewed > TIMEOUT_SECONDS:
            return True
        return self.host == socket.gethostname() and not _process_alive(self.pid)

    def describe(self, now: float) -> str:
        started = datetime.fromtimestamp(self.started, timezone.utc).isoformat(timespec="seconds")
        return (f"run {self.run_id} (pid {self.pid} on {self.host}, started {started}, "
                f"lease renewed {max(now - self.renewed, 0):.0f} s ago)")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class Lease:
    """The lease of one run on one store; use :meth:`acquire`, then :meth:`release`."""

    def __init__(self, url: str, run_id: str):
        self.url = url
        self.fs, self.path = beside(url, "lease.json")
        self.holder = Holder.this_process(run_id)
        self.lost: Holder | None = None
        """Who took the lease over, when that happened while this run was live."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.retries = RetryCount()

    def _retried(self, action, what: str):
        return retried(action, f"{self.path}: {what}", self.retries)

    @classmethod
    def acquire(cls, url: str, run_id: str) -> Lease:
        """Hold the store at ``url`` for run ``run_id`` and keep the lease renewed, or refuse with
        the live holder's name. A dead holder's lease is taken over."""
        lease = cls(url, run_id)
        for _ in range(3):  # a lease that vanishes or changes while we look is looked at again
            if lease._create():
                break
            current = lease._read()
            if current is None:
                continue
            if current.run_id == run_id:  # our own create, whose reply was lost and tried again
                break
            now = time.time()
            if not current.is_dead(now):
                raise TilepipeError(f"{url}: another run is writing this store: {current.describe(now)}; "
                                    f"wait for it to end (a dead run's lease expires after {TIMEOUT_SECONDS:.0f} s, "
                                    f"or at once on its own host; then --resume takes over)")
            if lease._read() == current:  # still the dead one: remove it and try to create ours
                try:
                    lease.fs.rm(lease.path)
                except FileNotFoundError:  # another run removed it first; creating decides
                    pass
        else:
            raise TilepipeError(f"{url}: could not take the lease {lease.path}: other runs are starting on this store")
        lease._thread = threading.Thread(target=lease._heartbeat, name=f"tilepipe-lease-{run_id}", daemon=True)
        lease._thread.start()
        return lease

    def _create(self) -> bool:
        """The first write of a run: a place where nothing can be written fails here, before any
        output exists."""
        try:
            self._retried(lambda: self.fs.makedirs(posixpath.dirname(self.path), exist_ok=True), "making its folder")
            self._retried(self._write_exclusive, "creating it")
        except FileExistsError:
            return False
        except OSError as exc:
            raise TilepipeError(f"{self.url}: cannot write there ({exc.strerror or first_line(exc)})") from None
        return True

    def _write_exclusive(self) -> None:
        with self.fs.open(self.path, "xb") as f:
            f.write(json.dumps(asdict(self.holder)).encode())

    def _read(self) -> Holder | None:
        for _ in range(20):  # a lease being created is empty for an instant: look again
            try:
                return Holder(**json.loads(self._retried(lambda: self.fs.cat(self.path), "reading it")))
            except FileNotFoundError:
                return None
            except (ValueError, TypeError):
                time.sleep(0.01)
        return Holder("unreadable lease", "unknown", 0, 0.0, 0.0)  # foreign or corrupt: never renewed

    def renew(self) -> None:
        """Stamp the lease as renewed now, unless another run has taken it over."""
        current = self._read()
        if current is not None and current.run_id != self.holder.run_id:
            self.lost = current
            self._stop.set()
            return
        self.holder = Holder.this_process(self.holder.run_id, self.holder.started)
        self.fs.pipe(self.path, json.dumps(asdict(self.holder)).encode())

    def _heartbeat(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                self.renew()
            except OSError:  # a passing filesystem hiccup: the next beat tries again
                pass

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still this run's. Never raises: it runs as
        the run ends, however it ends, and must not hide why it ended."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            current = self._read()
            if current is not None and current.run_id == self.holder.run_id:
                self._retried(lambda: self.fs.rm(self.path), "removing it")
        except OSError as exc:
            log.warning("%s: could not remove the lease (%s); it expires %.0f s after its last renewal",
                        self.path, fault_line(exc), TIMEOUT_SECONDS)
