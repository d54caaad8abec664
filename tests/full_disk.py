"""A disk that fills up: every file written under one folder counts against a budget of bytes, and
a write past it fails with ``OSError(ENOSPC)``, as a real full disk fails it. Removing files does
not give space back (a disk that stays full until the user acts).

Run as a script, ``python tests/full_disk.py FOLDER BYTES run ...``, it runs the tilepipe CLI with
the budget in place, so a test sees what a user sees: the exit status and the terminal. The
budget is applied where every local write of tilepipe, zarr and fsspec passes (``open`` and
``io.open``), so no module of tilepipe is patched: the fault arrives from below, as it would.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import sys

_open = io.open


class _Budget:
    def __init__(self, folder: str, size: int):
        self.folder, self.left = os.path.realpath(folder) + os.sep, size

    def covers(self, file, mode: str) -> bool:
        return (isinstance(file, (str, os.PathLike)) and any(m in mode for m in "wax+")
                and os.path.realpath(os.fspath(file)).startswith(self.folder))

    def take(self, size: int, name) -> None:
        if size > self.left:
            self.left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(name))
        self.left -= size


class _Counted:
    """A file object whose writes draw on the budget."""

    def __init__(self, file, budget: _Budget):
        self._file, self._budget = file, budget

    def write(self, data):
        self._budget.take(memoryview(data).nbytes if not isinstance(data, str) else len(data.encode()),
                          self._file.name)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __iter__(self):
        return iter(self._file)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._file.__exit__(*exc)


def install(folder: str, size: int) -> None:
    budget = _Budget(folder, size)

    def counted_open(file, mode="r", *args, **kwargs):
        handle = _open(file, mode, *args, **kwargs)
        return _Counted(handle, budget) if budget.covers(file, mode) else handle

    builtins.open = io.open = counted_open


if __name__ == "__main__":
    install(sys.argv[1], int(sys.argv[2]))
    from tilepipe.cli import main

    main(sys.argv[3:])
