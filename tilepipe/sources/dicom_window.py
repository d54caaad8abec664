"""Which intensity window the network sees for a DICOM image.

In order of precedence: ``--window CENTER,WIDTH`` or a preset; an explicit ``--scaling`` (the same
option as for GeoTIFF); a colour image's full dtype range; the files' own WindowCenter/WindowWidth;
percentiles of a sample of frames. A series often carries a different window on every slice, so
the file window is the median over slices: one window for the whole volume, so that a pixel's
value never depends on which slice it sits in.

A 4-D series is several volumes, and they may hold different quantities: a field-map series puts
a magnitude image (windows around 1076/1870) beside a field map in Hz (0/1000), a diffusion
series b=0 beside b=1000. One window for all would clip one and saturate the other, so each volume
is windowed on its own (:func:`volume_windows`): its own frames' windows, else percentiles of its
own frames. A window the user gives (``--window``, ``--scaling``) applies to every volume alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterable

import numpy as np

from ..errors import TilepipeError
from ..option_grammars import WINDOW_PRESETS, window_values
from .scaling import IntensityScaling, ScalingRequest, resolve_scaling


@dataclass(frozen=True)
class VoiWindow:
    center: float
    width: float
    source: str
    """A preset name, ``given`` or ``from the file``."""

    @property
    def label(self) -> str:
        return f"window {self.center:g},{self.width:g} ({self.source})"

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class WindowChoice:
    scaling: IntensityScaling
    window: VoiWindow | None
    warnings: tuple[str, ...] = ()


def parse_window(text: str) -> VoiWindow:
    return VoiWindow(*window_values(text))


def file_window(windows: Iterable[tuple[float, float] | None]) -> VoiWindow | None:
    """The median of the files' (center, width) pairs, or None when no file has one."""
    found = np.asarray([w for w in windows if w is not None], float)
    if not len(found):
        return None
    return VoiWindow(float(np.median(found[:, 0])), float(np.median(found[:, 1])), "from the file")


def choose_scaling(request: ScalingRequest, window_text: str | None, *, path: str, modality: str, color: bool,
                   dtype: np.dtype, file_windows: Iterable[tuple[float, float] | None],
                   sample: Callable[[], tuple[np.ndarray, str]], mirror_sum: float | None) -> WindowChoice:
    """Resolve the scaling; ``mirror_sum`` is set for MONOCHROME1, whose values the source mirrors
    (``v -> mirror_sum - v``), so a window given in the file's values is mirrored the same way."""
    bands = 3 if color else 1
    explicit = request.method != "auto"
    if window_text:
        if explicit:
            raise TilepipeError("--window and --scaling both given: use one of them")
        if color:
            raise TilepipeError(f"{path}: a colour image; --window applies to grayscale DICOM (use --scaling)")
        window = parse_window(window_text)
        note = ((f"--window {window.source} is a CT preset in Hounsfield units, but the modality is {modality}",)
                if window.source in WINDOW_PRESETS and modality != "CT" else ())
        return WindowChoice(_window_scaling(window, mirror_sum, "given with --window"), window, note)
    if explicit or color:
        return WindowChoice(resolve_scaling(request, dtype, bands, sample), None)
    window = file_window(file_windows)
    if window is not None:
        return WindowChoice(_window_scaling(window, mirror_sum, "WindowCenter/WindowWidth, median over frames"), window)
    percentile = replace(request, method="percentile")  # keeps the numbers a task spec ships
    return WindowChoice(resolve_scaling(percentile, dtype, bands, sample), None)


def _window_scaling(window: VoiWindow, mirror_sum: float | None, where: str) -> IntensityScaling:
    center = window.center if mirror_sum is None else mirror_sum - window.center
    label = window.label if mirror_sum is None else f"{window.label}, mirrored for MONOCHROME1"
    half = window.width / 2
    return IntensityScaling(label, (center - half,), (center + half,), where)


def volume_windows(labels: list[dict], choices: list[WindowChoice]) -> list[dict]:
    """What the store's attributes and the summary record of a 4-D series' windows: each volume's
    labels (what tells it apart), window (None when it is not a file's or the user's) and scaling."""
    return [{"labels": dict(label), "window": choice.window.to_json() if choice.window else None,
             "scaling": choice.scaling.to_json()} for label, choice in zip(labels, choices)]
