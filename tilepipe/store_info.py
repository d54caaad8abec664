"""The record a tilepipe store keeps of its run: the group attribute ``tilepipe``, declared once.

One JSON document, as zarr-python declares its metadata documents: a frozen value per document
(:class:`StoreInfo`, and the :class:`Fingerprint` inside it) with ``to_json`` and ``from_json``,
so the writer (:mod:`tilepipe.sink`), the run (:mod:`tilepipe.pipeline`), ``--resume``
(:mod:`tilepipe.resume`) and the exporters read and change fields by name instead of patching a
dict. The keys, their order and their values are those stores have always had, so a store
written before this module reads the same, and one written now reads in an older tilepipe.

A key this version does not know (written by another version, or by a tool beside tilepipe) is
kept in ``extra`` and written back as it was: rewriting the document (a resumed run claiming the
store, the summary, the completion mark) never drops it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

STORE_FORMAT = "tilepipe-mask/1"


def _known(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name != "extra")


def _document(value, always: tuple[str, ...] = ()) -> dict:
    """The known fields that hold a value (and those in ``always``, even None), in their declared
    order, then ``extra``."""
    known = {name: getattr(value, name) for name in _known(type(value))}
    return {**{k: v for k, v in known.items() if v is not None or k in always}, **value.extra}


def _read(cls, data: dict):
    names = _known(cls)
    return cls(**{k: data[k] for k in names if k in data}, extra={k: v for k, v in data.items() if k not in names})


@dataclass(frozen=True)
class Fingerprint:
    """What must match for ``--resume`` to reuse a store's finished blocks (built by
    :func:`tilepipe.resume.fingerprint`, which says why each part is there). A field is None in a
    store made before it existed."""

    input: dict | None = None
    """Path, format, size, bands used, dtype and scaling of the input."""
    content: dict | None = None
    """The identity of the input's pixels (:func:`tilepipe.sources.identity.content_identity`)."""
    geometry_sha256: str | None = None
    plan: dict | None = None
    model: dict | None = None
    engine: dict | None = None
    """The resolved precision and device type."""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return _document(self)

    @classmethod
    def from_json(cls, data: dict) -> Fingerprint:
        return _read(cls, data)


@dataclass(frozen=True)
class StoreInfo:
    """The ``tilepipe`` attribute of a store. ``format``, ``complete`` and ``run_id`` are always
    written; the run's fields only when the store was made by a run."""

    input: str | None = None
    """The input as the run was given it."""
    options: dict | None = None
    """The run's options (:meth:`tilepipe.options.RunOptions.to_json`)."""
    model: dict | None = None
    """What the model is (:meth:`tilepipe.model.ModelCard.describe`)."""
    fingerprint: Fingerprint | None = None
    format: str = STORE_FORMAT
    complete: bool = False
    """True only once a run has ended well: every block, the pyramid and the summary written."""
    run_id: str | None = None
    """The run that writes the store; its handles refuse to write once the store names another."""
    summary: dict | None = None
    """The run summary (also written beside the store)."""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        document = _document(self, always=("format", "complete", "run_id"))
        if self.fingerprint is not None:
            document["fingerprint"] = self.fingerprint.to_json()
        return document

    @classmethod
    def from_json(cls, data: dict) -> StoreInfo:
        info = _read(cls, data)
        if info.fingerprint is None:
            return info
        return replace(info, fingerprint=Fingerprint.from_json(info.fingerprint))
