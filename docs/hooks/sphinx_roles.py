"""Griffe extension for the API pages: tilepipe's docstrings name other objects with Sphinx roles
(``:class:`RunFailed```, ``:func:`tilepipe.run```) and literals with double backticks. Markdown
shows neither; this turns each into a code span (``RunFailed``) as the docstrings are loaded."""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`~?([^`]+)`")
LITERAL = re.compile(r"``([^`]+)``")


def markdown_spans(text: str) -> str:
    """``:class:`X``` and ````X```` as the Markdown code span `X`."""
    return LITERAL.sub(r"`\1`", ROLE.sub(r"`\1`", text))


class SphinxRolesAsCode(griffe.Extension):
    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_spans(obj.docstring.value)
