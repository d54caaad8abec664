"""Image sources: one module per format behind the small :class:`Source` protocol.

A task never carries an open file: it carries a :class:`SourceSpec` (path and options) and calls
:func:`open_source`, which opens the file once per process and run and caches it.
"""

from __future__ import annotations

from functools import lru_cache

from .spec import Source, SourceSpec


@lru_cache(maxsize=8)
def open_source(spec: SourceSpec, run_id: str | None = None) -> Source:
    """The source for ``spec.path``: DICOM for a folder, a DICOMDIR, a ``.dcm`` file or any file
    with the DICM preamble; GeoTIFF (anything GDAL reads) otherwise.

    ``run_id`` is part of the cache key only: the blocks of one run share one handle per process,
    and a later run (in a notebook, or on a long-lived Dask worker) opens the file afresh, since it
    may have been replaced in between."""
    from .dicom_files import is_dicom_path

    if is_dicom_path(spec.path):
        from .dicom import DicomSource

        return DicomSource(spec)
    from .geotiff import GeoTiffSource

    return GeoTiffSource(spec)
