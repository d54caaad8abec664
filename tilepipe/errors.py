"""The one exception type a user should ever see.

Everything that goes wrong because of the input, the options or the environment is raised as a
:class:`TilepipeError` whose message names the file (or option) and the problem in one line; the
CLI prints that line and exits non-zero. Anything else escaping is a bug in tilepipe.

A fault of the environment during a run (a full disk, a read-only folder) is told the same way:
:func:`fault_line` names it as the user would, :func:`what_to_do` says what to fix first.
"""

import errno
import os


class TilepipeError(Exception):
    """A problem with the user's input, options or environment, explained in one line."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries such as GDAL and pydicom write long,
    multi-line ones), or its type's name when it says nothing: what goes into a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_WHAT_TO_DO = {
    errno.ENOSPC: "free space",
    errno.EDQUOT: "free space or raise the quota",
    errno.EROFS: "make the output writable",
    errno.EACCES: "make the output writable",
    errno.EPERM: "make the output writable",
}
"""Faults of the place being written to that the user fixes before going on, by errno."""


def fault_line(exc: BaseException) -> str:
    """An exception in the user's terms: an ``OSError`` with an errno as its plain reason ("no
    space left on device"), a :class:`TilepipeError` as it is, anything else after its type name
    (a bug's message alone rarely says what went wrong)."""
    if isinstance(exc, OSError) and exc.errno and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    if isinstance(exc, TilepipeError) or not str(exc).strip():
        return first_line(exc)
    return f"{type(exc).__name__}: {first_line(exc)}"


def what_to_do(line: str) -> str:
    """The step before ``run again with --resume`` for a fault described by :func:`fault_line`
    (e.g. "free space and "), or "" when rerunning is all there is to do."""
    for code, action in _WHAT_TO_DO.items():
        if line.startswith(fault_line(OSError(code, os.strerror(code)))):
            return f"{action} and "
    return ""
