"""Exporters: turn a finished tilepipe store into files other tools open.

Each exporter module exposes ``export(store: MaskStore, out: str, **options) -> str`` (the path it
wrote) and reads the store block by block, never the whole mask at once. ``FORMATS`` maps the
``tilepipe export --to`` formats (:class:`tilepipe.modes.ExportFormat`) to those modules.
"""

from __future__ import annotations

import importlib

from ..errors import TilepipeError
from ..modes import ExportFormat
from ..sink import MaskStore

FORMATS = {
    ExportFormat.COG: "tilepipe.exporters.cog",
    ExportFormat.PNG: "tilepipe.exporters.png",
    ExportFormat.DICOM_SEG: "tilepipe.exporters.dicom_seg",
    ExportFormat.GEOPARQUET: "tilepipe.exporters.vector",
    ExportFormat.GPKG: "tilepipe.exporters.vector",
    ExportFormat.GEOJSON: "tilepipe.exporters.vector",
}
VECTOR = {ExportFormat.GEOPARQUET, ExportFormat.GPKG, ExportFormat.GEOJSON}
"""The polygon formats: one module writes them all, told which; their libraries are the
``tilepipe[vector]`` extra, so a core install stays lean."""


def export(store_url: str, fmt: str, out: str, **options) -> str:
    if fmt not in FORMATS:
        raise TilepipeError(f"--to {fmt!r}: choose one of {', '.join(FORMATS)}")
    store = MaskStore.open(store_url)
    if not store.is_complete:
        raise TilepipeError(f"{store_url}: the run that wrote this store did not finish; run it again (or --resume) before exporting")
    try:
        module = importlib.import_module(FORMATS[fmt])
    except ModuleNotFoundError as exc:
        how = "pip install 'tilepipe[vector]'" if fmt in VECTOR else "pip"
        raise TilepipeError(f"--to {fmt}: needs the Python package {exc.name!r}; install it with {how}") from None
    return module.export(store, out, **({"fmt": fmt} if fmt in VECTOR else {}), **options)
