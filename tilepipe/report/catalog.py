"""The reference catalog: what tilepipe's choices rest on, and where each fact comes from.

Each entry (a model, a set of weights, a paper, a code repository or a performance tactic) is one
YAML file, ``catalog/<id>.yaml`` in a checkout and ``tilepipe/catalog_data/<id>.yaml`` in an
installed wheel. Every fact names a specific source (a section or table of a paper, a docs page,
a file in a repository), and a tactic must reference the entries that justify it.

The run summary cites entries by id, so ids are a stable contract: renaming or deleting an entry
would leave dangling citations. :func:`load_catalog` therefore validates the whole catalog before
anything uses it, and reports the first problem as a :class:`~tilepipe.errors.TilepipeError` that
names the offending file.
"""

from __future__ import annotations

import importlib.resources
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import TilepipeError

KINDS = frozenset({"model", "weights", "paper", "repository", "tactic"})
LINK_KEYS = frozenset({"arxiv", "github", "docs", "url"})
REQUIRED_FIELDS = ("id", "title", "kind", "links", "facts")
OPTIONAL_FIELDS = ("references", "summary")


@dataclass(frozen=True)
class Fact:
    text: str
    source: str


@dataclass(frozen=True)
class Entry:
    id: str
    title: str
    kind: str
    links: dict[str, str]
    facts: tuple[Fact, ...]
    references: tuple[str, ...] = ()
    summary: str = ""


def catalog_dir() -> Path:
    """The catalog folder: the checkout's top-level ``catalog/``, else the copy in the package."""
    checkout = Path(__file__).resolve().parents[2] / "catalog"
    if checkout.is_dir():
        return checkout
    return Path(str(importlib.resources.files("tilepipe") / "catalog_data"))


def load_catalog(path: Path | None = None) -> dict[str, Entry]:
    """Load and validate every ``*.yaml`` entry in ``path`` (default :func:`catalog_dir`).

    Returns the entries keyed by id, in file-name order. Raises TilepipeError naming the file for
    unreadable YAML, a missing or unknown field, a kind outside :data:`KINDS`, an id that differs
    from the file stem, an entry without links or facts, a tactic without references, or a
    reference to an id that is not in the catalog.
    """
    directory = Path(path) if path is not None else catalog_dir()
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise TilepipeError(f"{directory}: no catalog entries (*.yaml) found")
    entries = {file.stem: _parse_entry(file) for file in files}
    for entry in entries.values():
        dangling = [ref for ref in entry.references if ref not in entries]
        if dangling:
            raise _problem(
                directory / f"{entry.id}.yaml", f"references unknown id(s): {', '.join(dangling)}"
            )
    return entries


def format_entry(entry: Entry) -> str:
    """Multi-line, human-readable text for ``tilepipe catalog ID``."""
    lines = [f"{entry.id} ({entry.kind})", entry.title]
    if entry.summary:
        lines += ["", _wrap(entry.summary, "")]
    lines += ["", "links:"]
    lines += [f"  {key}: {url}" for key, url in entry.links.items()]
    lines += ["", "facts:"]
    for fact in entry.facts:
        lines.append(_wrap(fact.text, "  - ", "    "))
        lines.append(_wrap(f"source: {fact.source}", "    "))
    if entry.references:
        lines += ["", f"references: {', '.join(entry.references)}"]
    return "\n".join(lines)


def format_listing(entries: Iterable[Entry] | Mapping[str, Entry]) -> str:
    """One line per entry (id, kind, title), columns aligned; accepts a list or load_catalog()'s dict."""
    rows = list(entries.values() if isinstance(entries, Mapping) else entries)
    if not rows:
        return ""
    id_width = max(len(entry.id) for entry in rows)
    kind_width = max(len(entry.kind) for entry in rows)
    return "\n".join(
        f"{entry.id:<{id_width}}  {entry.kind:<{kind_width}}  {entry.title}" for entry in rows
    )


def _wrap(text: str, first: str, rest: str | None = None) -> str:
    return textwrap.fill(
        text, width=100, initial_indent=first, subsequent_indent=first if rest is None else rest
    )


def _parse_entry(file: Path) -> Entry:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _problem(file, f"cannot read YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise _problem(file, "expected a mapping of fields at the top level")

    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise _problem(file, f"missing required field(s): {', '.join(missing)}")
    unknown = sorted(str(name) for name in set(data) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise _problem(file, f"unknown field(s): {', '.join(unknown)}")

    entry_id = _text(data, "id", file)
    if entry_id != file.stem:
        raise _problem(file, f"id {entry_id!r} does not match the file name (expected {file.stem!r})")
    kind = _text(data, "kind", file)
    if kind not in KINDS:
        raise _problem(file, f"unknown kind {kind!r} (expected one of: {', '.join(sorted(KINDS))})")

    links = data["links"]
    if not isinstance(links, dict) or not links:
        raise _problem(file, "'links' must be a mapping with at least one link")
    for key, url in links.items():
        if key not in LINK_KEYS:
            raise _problem(file, f"unknown link key {key!r} (expected among: {', '.join(sorted(LINK_KEYS))})")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise _problem(file, f"link {key!r} must be an http(s) URL")

    facts = data["facts"]
    if not isinstance(facts, list) or not facts:
        raise _problem(file, "'facts' must be a non-empty list")
    parsed_facts = []
    for number, fact in enumerate(facts, start=1):
        if not isinstance(fact, dict) or set(fact) != {"text", "source"}:
            raise _problem(file, f"fact {number} must have exactly the fields 'text' and 'source'")
        parsed_facts.append(Fact(_text(fact, "text", file), _text(fact, "source", file)))

    references = data.get("references") or []
    if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
        raise _problem(file, "'references' must be a list of entry ids")
    if kind == "tactic" and not references:
        raise _problem(file, "a tactic must list at least one entry in 'references'")

    summary = data.get("summary") or ""
    if not isinstance(summary, str):
        raise _problem(file, "'summary' must be text")

    return Entry(
        id=entry_id,
        title=_text(data, "title", file),
        kind=kind,
        links=dict(links),
        facts=tuple(parsed_facts),
        references=tuple(references),
        summary=summary.strip(),
    )


def _text(data: dict[str, Any], name: str, file: Path) -> str:
    value = data[name]
    if not isinstance(value, str) or not value.strip():
        raise _problem(file, f"'{name}' must be non-empty text")
    return value.strip()


def _problem(file: Path, problem: str) -> TilepipeError:
    return TilepipeError(f"{file}: {problem}")
