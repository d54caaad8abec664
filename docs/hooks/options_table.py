"""MkDocs hook: writes the options table of ``reference/options.md`` from the declaration.

Every run option is declared once, as a field of :class:`tilepipe.options.RunOptions` (its help,
its default as users read it, its choices, whether only ``tilepipe run`` has it). The page holds
the marker ``<!-- options-table -->``; at build time this hook puts the table made from
:data:`tilepipe.options.OPTIONS` in its place, so the table cannot drift from the declaration.
It reads the declaration only (``tilepipe.options`` imports neither torch nor the pipeline).
"""

from __future__ import annotations

import sys
from pathlib import Path

MARKER = "<!-- options-table -->"
ROOT = Path(__file__).resolve().parents[2]


def _options():
    """The declaration of this checkout, even when another tilepipe is installed."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tilepipe.options import OPTIONS

    return OPTIONS


def _cell(text: str) -> str:
    """Text that stays in one table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def options_table(options=None) -> str:
    """The markdown table of every option, in declaration order: flag and config key, default,
    help, choices, and the commands that have it."""
    options = _options() if options is None else options
    rows = ["| option | config key | default | meaning | choices | commands |", "|---|---|---|---|---|---|"]
    for option in options.values():
        # a value as code; a default that is described ("from the weights") as words
        default = (option.shown_default if option.default_text is not None or not option.shown_default
                   else f"`{option.shown_default}`")
        choices = ", ".join(f"`{c}`" for c in option.parser.choices)
        commands = "run" if option.run_only else "run, plan"
        rows.append(f"| `{option.flag}` | `{option.key}` | {_cell(default)} | {_cell(option.help)} | "
                    f"{choices} | {commands} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, options_table())
