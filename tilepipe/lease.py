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
run's id, and :class:`tilepipe.sink.MaskStore` refuses to write for any other run (it checks
before a block's chunks and again before the block's record).

On a local filesystem, renewing, taking over and releasing are compare-and-set: each takes an
exclusive ``flock`` on the lease file, reads it, and changes it only if it still says what was
expected, in place (the same inode, so a run waiting for the lock sees the change). Without the
lock a renewal could read its own lease, lose it to a run that took it over as dead, and then
write over the new holder's lease, leaving both runs sure they hold the store. Other fsspec
filesystems (object stores, ``memory://``) have no such lock: there a renewal reads, then writes.

Its creation, reading and removal are retried on transient errors (:mod:`tilepipe.retry`; a renewal
that fails is simply made again at the next beat). A create whose reply was lost
may have happened: the lease found then names this run, and is taken as created. Releasing never
raises: a lease that cannot be removed expires (the run that ends says so in the log).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import posixpath
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from fsspec.implementations.local import LocalFileSystem

from .errors import TilepipeError, fault_line, first_line
from .retry import RetryCount, retried
from .sink import beside

log = logging.getLogger("tilepipe")

TIMEOUT_SECONDS = 60.0
"""A lease not renewed for this long belongs to a dead run and can be taken over."""
RENEW_SECONDS = 10.0
LOCK_WAIT_SECONDS = 5.0
"""How long a renewal, a takeover or a release waits for another one's lock (they last
milliseconds; a holder stopped while holding it must not stall every other run)."""


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


UNREADABLE = Holder("unreadable lease", "unknown", 0, 0.0, 0.0)
"""What a foreign or corrupt lease file stands for: a holder never renewed, so taken over."""


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
        self.local = isinstance(self.fs, LocalFileSystem)
        """Renewal and takeover are compare-and-set under a file lock (see the module's docstring)."""
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
            try:
                if lease._take_over(current):
                    break
            except TimeoutError as exc:
                raise TilepipeError(f"{url}: could not take over the dead run's lease: {exc}") from None
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
            f.write(_encode(self.holder))

    def _read(self) -> Holder | None:
        for _ in range(20):  # a lease being created is empty for an instant: look again
            try:
                holder = _decode(self._retried(lambda: self.fs.cat(self.path), "reading it"))
            except FileNotFoundError:
                return None
            if holder is not None:
                return holder
            time.sleep(0.01)
        return UNREADABLE  # foreign or corrupt: never renewed

    def renew(self) -> None:
        """Stamp the lease as renewed now, unless another run has taken it over."""
        if not self.local:
            current = self._read()
            if current is not None and current.run_id != self.holder.run_id:
                self._lose(current)
                return
            self.holder = Holder.this_process(self.holder.run_id, self.holder.started)
            self.fs.pipe(self.path, _encode(self.holder))
            return
        with self._locked() as fd:
            if fd is None:  # removed by hand: recreate it, unless another run got there first
                if not self._create():
                    self._lose(self._read())
                return
            current = _decode(os.pread(fd, 1 << 16, 0))
            if current is None or current.run_id != self.holder.run_id:
                self._lose(current or UNREADABLE)
                return
            self.holder = Holder.this_process(self.holder.run_id, self.holder.started)
            _rewrite(fd, _encode(self.holder))

    def _lose(self, to: Holder | None) -> None:
        self.lost = to
        self._stop.set()

    def _take_over(self, dead: Holder) -> bool:
        """Replace ``dead``'s lease with ours if the file still holds exactly that lease."""
        if not self.local:
            if self._read() == dead:  # still the dead one: remove it and try to create ours
                try:
                    self.fs.rm(self.path)
                except FileNotFoundError:  # another run removed it first; creating decides
                    pass
            return self._create()
        with self._locked() as fd:
            data = os.pread(fd, 1 << 16, 0) if fd is not None else b""
            if not data or (_decode(data) or UNREADABLE) != dead:
                return False  # gone, being created or changed meanwhile: look again
            _rewrite(fd, _encode(self.holder))
            return True

    @contextmanager
    def _locked(self):
        """The local lease file, opened and exclusively locked, or None when there is none. The
        lock goes with the process, so a crash never leaves it held. A file replaced or removed
        while we waited for its lock is opened again (the lock must be on the file the path names)."""
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR)
            except FileNotFoundError:
                fd = None
            if fd is None:
                yield None
                return
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{self.path}: locked by another run for {LOCK_WAIT_SECONDS:.0f} s")
                        time.sleep(0.01)
                if _names(self.path, fd):
                    yield fd
                    return
            finally:
                os.close(fd)

    def _heartbeat(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                self.renew()
            except (OSError, TilepipeError):  # a passing filesystem hiccup or lock: the next beat tries again
                pass

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still this run's. Never raises: it runs as
        the run ends, however it ends, and must not hide why it ended."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._remove_if_ours()
        except (OSError, TimeoutError) as exc:  # a lock held by a run taking it over: that run's now, or expires
            log.warning("%s: could not remove the lease (%s); it expires %.0f s after its last renewal",
                        self.path, fault_line(exc) if isinstance(exc, OSError) else exc, TIMEOUT_SECONDS)

    def _remove_if_ours(self) -> None:
        if not self.local:
            current = self._read()
            if current is not None and current.run_id == self.holder.run_id:
                self._retried(lambda: self.fs.rm(self.path), "removing it")
            return
        with self._locked() as fd:
            current = _decode(os.pread(fd, 1 << 16, 0)) if fd is not None else None
            if current is not None and current.run_id == self.holder.run_id:
                os.unlink(self.path)


def _encode(holder: Holder) -> bytes:
    return json.dumps(asdict(holder)).encode()


def _decode(data: bytes) -> Holder | None:
    """The holder a lease file names; None for an empty (being created) or foreign file."""
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError):
        return None


def _rewrite(fd: int, data: bytes) -> None:
    """Replace the file's content in place: written over, then cut to length, so that a reader
    without the lock sees the old lease, the new one, or a mix it cannot parse and reads again,
    never an empty file it would take for one being created."""
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


def _names(path: str, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (here.st_ino, here.st_dev) == (opened.st_ino, opened.st_dev)
