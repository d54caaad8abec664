"""What pydicom, highdicom and the pixel decoders warn about while a DICOM input is read, said by
tilepipe instead of printed raw.

A library's ``warnings.warn`` lands on the terminal as ``.../pydicom/pixels/decoders/base.py:302:
UserWarning: ...`` between tilepipe's own lines, and then nowhere: not in the log, not in the run
summary a reader opens later. Inside :func:`library_warnings` the warnings raised *by the thread
inside it* are taken instead: each is logged once per process (``tilepipe.sources.dicom``, at INFO:
in ``--log-file`` and under ``-v``) and handed to the caller, which puts those of opening the
source (headers, geometry, the first decodes and the statistics sample) into the source's warnings
and so into the summary and ``tilepipe plan``.

Scoped, not a process-wide filter: no warning filter is touched, so what the filters ignore stays
ignored (the CLI's choice for the JFIF marker warning, :data:`.dicom_pixels.JFIF_WARNING`) and the
default "once per place" rule still holds. ``warnings.showwarning`` is swapped while any thread is
inside a scope (reference-counted under a lock, since the warnings module's state is global and
block threads decode in parallel); a warning from a thread that is not inside a scope passes
through to the original untouched.
"""

from __future__ import annotations

import logging
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger("tilepipe.sources.dicom")

_lock = threading.Lock()
_scopes: dict[int, list[str]] = {}
"""Thread id -> the warnings taken so far in that thread's outermost scope."""
_installed: warnings.catch_warnings | None = None
"""Open while any thread is in a scope: it puts the filters and ``showwarning`` back when the last
scope closes, and entering it restarts the "once per place" registries, so a source opened a
second time in one process (``plan``, then ``run``) hears its warnings again."""
_passthrough = warnings.showwarning
"""Where the warnings of threads outside any scope go: the ``showwarning`` found on installing."""
_logged: set[str] = set()


def _origin(filename: str) -> str:
    """The package that raised a warning: the folder under site-packages, else the file's name."""
    parts = Path(filename).parts
    return parts[parts.index("site-packages") + 1] if "site-packages" in parts[:-1] else Path(filename).stem


def _show(message, category, filename, lineno, file=None, line=None) -> None:
    taken = _scopes.get(threading.get_ident())
    if taken is None:
        _passthrough(message, category, filename, lineno, file, line)
        return
    text = f"{_origin(filename)} warns: {message}"
    if text not in taken:
        taken.append(text)


@contextmanager
def library_warnings(where: str) -> Iterator[list[str]]:
    """Take the warnings this thread raises inside the block; yields their texts (each once,
    ``"pydicom warns: ..."``), complete when the block ends, and logs each under ``where``."""
    global _installed, _passthrough
    ident = threading.get_ident()
    with _lock:
        outer = ident not in _scopes
        if not _scopes:
            _installed = warnings.catch_warnings()
            _installed.__enter__()
            _passthrough, warnings.showwarning = warnings.showwarning, _show
        taken = _scopes.setdefault(ident, [])
    try:
        yield taken
    finally:
        if outer:
            with _lock:
                del _scopes[ident]
                if not _scopes:
                    _installed.__exit__(None, None, None)
                    _installed = None
                fresh = [t for t in taken if f"{where}: {t}" not in _logged]
                _logged.update(f"{where}: {t}" for t in fresh)
            for text in fresh:
                log.info("%s: %s", where, text)
