"""A series with several frames per position (echoes, time points, b-values, repeated acquisitions)
as several volumes: which attribute tells the frames apart, and which frames ``--select`` keeps.

The model is 2-D, so every frame can be segmented; what must be decided is which frames form one
volume. The frames' labels (:attr:`.dicom_header.FrameInfo.labels`: the dimension indices of an
enhanced image, else EchoNumbers, TemporalPositionIdentifier, b-value, AcquisitionNumber,
TriggerTime...) are tried in their order, one attribute at a time, then in pairs and threes: the
first choice whose groups hold every position at most once, and each the same number of frames,
is the split. An attribute that changes with every slice (some scanners number each slice as its
own acquisition) fails that test and is passed over. Frames at one position that no attribute
tells apart are not guessed at: the caller refuses them. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np

from ..errors import TilepipeError
from ..option_grammars import parse_select
from .dicom_geometry import DUPLICATE_TOLERANCE_MM

MAX_KEYS = 3
"""At most this many attributes combined to tell volumes apart (e.g. echo x time point x b-value)."""


@dataclass(frozen=True)
class VolumeSplit:
    """Frames grouped into volumes, in ascending order of their distinguishing values."""

    keys: tuple[str, ...]
    """The attributes that tell the volumes apart."""
    members: tuple[tuple[int, ...], ...]
    """Input indices of each volume's frames."""
    labels: tuple[dict, ...]
    """Each volume's values of every attribute that is constant within it and differs between
    volumes (the ``keys`` and whatever else goes with them, e.g. the b-value beside the acquisition)."""

    @property
    def even(self) -> bool:
        """All volumes have the same number of slices (what a (volume, z, y, x) mask needs)."""
        return len({len(m) for m in self.members}) == 1


def _sort_key(value) -> tuple:
    """Numbers before text before absent, numbers by value."""
    if value is None:
        return (2, "")
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def _one_per_position(groups: list[list[int]], locations: np.ndarray) -> bool:
    return all(np.all(np.diff(np.sort(locations[g])) >= DUPLICATE_TOLERANCE_MM) for g in groups)


def split_volumes(labels: Sequence[Mapping[str, object]], locations: Sequence[float]) -> VolumeSplit | None:
    """Group frames (their labels and positions along the normal) into volumes; None when no
    attribute explains the repeated positions. A split into volumes of equal slice counts wins;
    failing that, the first split that explains the repeats but leaves volumes of different
    counts (a volume missing slices) is returned, ``even`` False, for the caller to refuse with
    the reason."""
    where = np.asarray(locations, float)
    keys = list(dict.fromkeys(k for frame in labels for k in frame))
    varying = [k for k in keys if len({repr(frame.get(k)) for frame in labels}) > 1]
    uneven = None
    for size in range(1, min(MAX_KEYS, len(varying)) + 1):
        for chosen in combinations(varying, size):
            by_value: dict[tuple, list[int]] = {}
            for i, frame in enumerate(labels):
                by_value.setdefault(tuple(frame.get(k) for k in chosen), []).append(i)
            if len(by_value) < 2 or not _one_per_position(list(by_value.values()), where):
                continue
            ordered = sorted(by_value.items(), key=lambda item: tuple(_sort_key(v) for v in item[0]))
            members = tuple(tuple(g) for _, g in ordered)
            split = VolumeSplit(chosen, members, _volume_labels(labels, members, varying))
            if split.even:
                return split
            uneven = uneven or split
    return uneven


def _volume_labels(labels: Sequence[Mapping[str, object]], members, varying: list[str]) -> tuple[dict, ...]:
    constant = [k for k in varying if all(len({repr(labels[i].get(k)) for i in g}) == 1 for g in members)]
    telling = [k for k in constant if len({repr(labels[g[0]].get(k)) for g in members}) > 1]
    return tuple({k: labels[g[0]].get(k) for k in telling if labels[g[0]].get(k) is not None} for g in members)


def _matches(value, wanted: str) -> bool:
    if value is None:
        return False
    if isinstance(value, (int, float)):
        try:
            return float(wanted) == float(value)
        except ValueError:
            return False
    return str(value) == wanted


def select_frames(labels: Sequence[Mapping[str, object]], text: str, path: str) -> list[int]:
    """Indices of the frames whose label ``KEY`` equals ``VALUE`` (numbers compare as numbers)."""
    key, wanted = parse_select(text)
    values = sorted({repr(frame[key]): frame[key] for frame in labels if key in frame}.values(), key=_sort_key)
    if not values:
        known = sorted({k for frame in labels for k in frame})
        raise TilepipeError(f"--select {text}: no frame of {path} has {key}; its frames have "
                            f"{', '.join(known) or 'no attribute that tells volumes apart'}")
    kept = [i for i, frame in enumerate(labels) if _matches(frame.get(key), wanted)]
    if not kept:
        raise TilepipeError(f"--select {text}: no frame of {path} has {key} {wanted} "
                            f"(values there: {', '.join(map(str, values))})")
    return kept


def describe_labels(labels: Mapping[str, object]) -> str:
    return ", ".join(f"{k} {v}" for k, v in labels.items()) or "unlabelled"
