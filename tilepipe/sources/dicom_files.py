"""Finding DICOM instances: a folder (searched recursively), a DICOMDIR or one file; then a series.

Each file found is read by :func:`.dicom_header.read_header` (headers only) and sorted into images
and skipped files. Broken files are fatal only for the series they belong to, or for every series
when the header is too damaged to tell. A folder holding several series is never guessed at:
:func:`select_series` asks for ``--series``, unless every series is wanted (``--all-series``,
:func:`study_series`).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.fileset import FileSet

from ..errors import TilepipeError, first_line
from .dicom_header import Instance, Skipped, has_preamble, read_header


@dataclass
class Discovery:
    """Everything found under the input path."""

    path: str
    instances: list[Instance] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def non_dicom(self) -> int:
        return sum(s.reason == "not DICOM" for s in self.skipped)

    @property
    def non_image(self) -> int:
        """DICOM files that are no image to segment: SR, DICOMDIR, SEG and the like."""
        return sum(not s.broken and s.reason != "not DICOM" for s in self.skipped)


def is_dicom_path(path: str) -> bool:
    """A folder, a DICOMDIR, a ``.dcm`` file or any file with the DICM preamble."""
    p = Path(path)
    named = p.suffix.lower() in (".dcm", ".dicom") or p.name.upper() == "DICOMDIR"
    if "://" in path or not p.exists():
        return named
    return named or p.is_dir() or has_preamble(p)


def discover(path: str) -> Discovery:
    p = Path(path)
    if not p.exists():
        raise TilepipeError(f"{path}: no such file or folder")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
    elif p.name.upper() == "DICOMDIR":
        files = _dicomdir_files(p)
    else:
        files = [p]
    found = Discovery(str(path))
    for f in files:
        result = read_header(f)
        (found.instances if isinstance(result, Instance) else found.skipped).append(result)
    return found


def _dicomdir_files(path: Path) -> list[Path]:
    try:
        fileset = FileSet(pydicom.dcmread(path))
        return sorted({Path(instance.path) for instance in fileset})
    except Exception as exc:  # pydicom raises many types for a bad DICOMDIR
        raise TilepipeError(f"{path}: not a readable DICOMDIR ({first_line(exc)})") from None


@dataclass(frozen=True)
class SeriesSummary:
    uid: str
    description: str
    modality: str
    instances: int
    number: int | None = None
    """SeriesNumber, as the first file of the series states it."""

    def __str__(self) -> str:
        return f"{self.uid or '(no SeriesInstanceUID)'} ({self.modality} '{self.description}', {self.instances} file(s))"


def list_series(instances: list[Instance]) -> list[SeriesSummary]:
    counts = Counter(i.series_uid for i in instances)
    first = {}
    for i in instances:
        first.setdefault(i.series_uid, i)
    return [SeriesSummary(uid, first[uid].series_description, first[uid].modality, n, first[uid].series_number)
            for uid, n in counts.items()]


@dataclass(frozen=True)
class FoundSeries:
    """One image series of a study, to be run on its own."""

    summary: SeriesSummary
    location: str
    """The deepest folder (or the one file) that holds every file of the series, its broken ones
    included: what a run of this series searches. A study exported one folder per series is then
    not searched once per series, which would cost S x F header reads for S series of F files."""


def study_series(path: str) -> tuple[list[FoundSeries], Discovery]:
    """Every image series under ``path``, ordered by series number, description and UID (a
    stable order however the files are named), with what was found. A broken file whose series
    cannot be told fails the series whose location holds it, when that series is run."""
    found = discover(path)
    if not found.instances:
        raise TilepipeError(_nothing_found(found))
    files = defaultdict(list)
    for item in [*found.instances, *(s for s in found.skipped if s.broken and s.series_uid)]:
        files[item.series_uid].append(os.path.abspath(item.path))
    series = sorted(list_series(found.instances),
                    key=lambda s: (s.number is None, s.number or 0, s.description, s.uid))
    return [FoundSeries(s, os.path.commonpath(files[s.uid])) for s in series], found


def select_series(found: Discovery, requested: str | None) -> list[Instance]:
    """The instances of one series: the only one, or ``requested``; never a guess."""
    if not found.instances:
        raise TilepipeError(_nothing_found(found))
    series = list_series(found.instances)
    if requested:
        chosen = requested
        if chosen not in {s.uid for s in series}:
            raise TilepipeError(f"{found.path}: no series {chosen}; it holds " + "; ".join(map(str, series)))
    elif len(series) > 1:
        raise TilepipeError(f"{found.path}: holds {len(series)} series, choose one with --series UID: "
                            + "; ".join(map(str, series)))
    else:
        chosen = series[0].uid
    broken = [s for s in found.skipped if s.broken and s.series_uid in (chosen, None)]
    if broken:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise TilepipeError(f"{broken[0].path}: {broken[0].reason}{more}")
    return [i for i in found.instances if i.series_uid == chosen]


def _nothing_found(found: Discovery) -> str:
    broken = [s for s in found.skipped if s.broken]
    if broken:
        return f"{broken[0].path}: {broken[0].reason}"
    if Path(found.path).is_file() and len(found.skipped) == 1:
        return f"{found.path}: {found.skipped[0].reason}; nothing to segment"
    kinds = Counter(s.reason for s in found.skipped)
    detail = ", ".join(f"{n} {reason}" for reason, n in kinds.items()) or "no files at all"
    return f"{found.path}: no DICOM image found ({detail})"
