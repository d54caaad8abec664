"""The one exception type a user should ever see.

Everything that goes wrong because of the input, the options or the environment is raised as a
:class:`TilepipeError` whose message names the file (or option) and the problem in one line; the
CLI prints that line and exits non-zero. Anything else escaping is a bug in tilepipe.
"""


class TilepipeError(Exception):
    """A problem with the user's input, options or environment, explained in one line."""
