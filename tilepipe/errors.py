"""The one exception type a user should ever see.

Everything that goes wrong because of the input, the options or the environment is raised as a
:class:`TilepipeError` whose message names the file (or option) and the problem in one line; the
CLI prints that line and exits non-zero. Anything else escaping is a bug in tilepipe.
"""


class TilepipeError(Exception):
    """A problem with the user's input, options or environment, explained in one line."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries such as GDAL and pydicom write long,
    multi-line ones), or its type's name when it says nothing: what goes into a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
