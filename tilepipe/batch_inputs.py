"""What a batch runs: the command line's inputs expanded into one item per store, each with a
readable name that is unique under the output folder.

* a file (or URL) is one input, named after its stem (``scene_a.tif`` -> ``scene_a``);
* a folder holding rasters (:data:`RASTER_SUFFIXES`, searched recursively) gives each raster, in
  the order of their paths, so the order never depends on the file system's listing;
* with ``--all-series``, a folder (or a DICOMDIR or DICOM file) is a DICOM study: each image
  series in it is an input, named after its SeriesNumber and SeriesDescription, or its modality
  when it has no description (``3_CT_chest``, ``4_MR``; its UID is the run's ``series`` option, kept in the
  store's attributes), ordered by number; DICOM objects that are no image (SR, SEG, DICOMDIR...)
  are skipped and counted;
* any other folder is one DICOM input, as a single run takes it.

A name met twice gets ``-2``, ``-3``... in input order; ``batch`` is taken by the batch summary.
One argument that is a single input keeps a single run's meaning: ``-o`` is then the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import TilepipeError
from .sources.dicom_files import is_dicom_path, study_series

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")
"""The files a folder contributes as scenes (compared in lower case)."""
BATCH_NAME = "batch"
"""The batch summary's stem (``batch.summary.md``): no input store may take it."""


@dataclass(frozen=True)
class BatchInput:
    name: str
    """The store's name under the output folder, without ``.zarr``."""
    path: str
    series: str | None = None
    """DICOM: the SeriesInstanceUID this input reads, None for the whole path."""
    description: str = ""
    """How a person recognises the input: the path, and for a series its number and description."""


@dataclass(frozen=True)
class BatchInputs:
    items: tuple[BatchInput, ...]
    single: bool
    """One argument that is one input: a single run (``-o`` is the store), not a batch."""
    non_image: int = 0
    """DICOM objects found in the studies that are no image to segment (skipped)."""


def collect_inputs(arguments: list[str] | tuple[str, ...], all_series: bool = False) -> BatchInputs:
    if not arguments:
        raise TilepipeError("no input given")
    found: list[tuple[str, BatchInput]] = []  # (name wanted, input)
    non_image, expanded = 0, False
    for argument in arguments:
        path = Path(argument)
        if all_series and "://" not in argument and (path.is_dir() or is_dicom_path(argument)):
            series, skipped = _study(argument)
            found += series
            non_image += skipped
            expanded = True
        elif "://" not in argument and path.is_dir() and (rasters := _rasters(path)):
            found += [(_safe(r.stem), BatchInput("", str(r), description=str(r))) for r in rasters]
            expanded = True
        else:
            stem = PurePosixPath(argument.rstrip("/")).stem
            found.append((_safe(stem), BatchInput("", argument, description=argument)))
    names = _unique([wanted for wanted, _ in found])
    items = tuple(BatchInput(name, i.path, i.series, i.description) for name, (_, i) in zip(names, found))
    return BatchInputs(items, single=len(arguments) == 1 and not expanded, non_image=non_image)


def _rasters(folder: Path) -> list[Path]:
    return sorted((f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in RASTER_SUFFIXES),
                  key=lambda f: f.relative_to(folder).as_posix())


def _study(path: str) -> tuple[list[tuple[str, BatchInput]], int]:
    """Each image series of the study at ``path``, read from where its files lie."""
    if not Path(path).exists():
        raise TilepipeError(f"{path}: no such file or folder")
    series, found = study_series(path)
    items = []
    for s in series:
        summary = s.summary
        wanted = "_".join(part for part in (str(summary.number) if summary.number is not None else "",
                                            _safe(summary.description) or summary.modality) if part) or "series"
        number = f" {summary.number}" if summary.number is not None else ""
        shown = f"{path}: {summary.modality} series{number} '{summary.description}' ({summary.instances} files)"
        items.append((wanted, BatchInput("", s.location, summary.uid, shown)))
    return items, found.non_image


def _safe(text: str) -> str:
    """A file name any file system and URL takes: letters, digits, ``.``, ``_`` and ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")


def _unique(wanted: list[str]) -> list[str]:
    taken, names = {BATCH_NAME}, []
    for name in wanted:
        name = name or "input"
        unique, n = name, 1
        while unique in taken:
            n += 1
            unique = f"{name}-{n}"
        taken.add(unique)
        names.append(unique)
    return names
