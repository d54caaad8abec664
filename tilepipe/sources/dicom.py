"""DICOM input: a series folder, a DICOMDIR, a single or multi-frame file, or a whole-slide level.

The pieces, one module each: :mod:`.dicom_files` finds instances and picks a series,
:mod:`.dicom_header` reads each file's header only, :mod:`.dicom_stack` orders a series or
multi-frame into planes, :mod:`.dicom_wsi` lays out a whole-slide level as tiles,
:mod:`.dicom_frames` reads single frames (each file parsed once per process), :mod:`.dicom_pixels`
checks up front that they will decode and turns them into values, :mod:`.dicom_window` picks the
intensity window. :class:`DicomSource` joins them behind the :class:`~tilepipe.sources.Source`
protocol.

Opening validates everything that can fail without decoding the series (series choice, geometry,
decoder plugins, truncated files) and decodes exactly one frame, so a bad input fails before any
output exists. After that a frame is decoded only when a block's window needs it, through a small
byte-bounded cache shared by the threads of the process. What pydicom and highdicom warn about on
the way is tilepipe's to say (:mod:`.dicom_warnings`): the warnings of opening join the source's
warnings, those of later decodes go to the log.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from pydicom.uid import UID

from ..errors import TilepipeError
from ..grid import Window
from .spec import SourceSpec
from .dicom_files import discover, is_dicom_path, list_series, select_series
from .dicom_header import Instance
from .dicom_pixels import FrameCache, PixelFormat, check_decodable, check_pixel_data, decode_frame
from .dicom_stack import Frame, StackLayout
from .dicom_warnings import library_warnings
from .dicom_window import choose_scaling, volume_windows
from .dicom_wsi import SlideLayout
from .scaling import mark_non_finite

__all__ = ["DicomSource", "is_dicom_path"]

SAMPLE_FRAMES = 8
SAMPLE_VALUES = 1_000_000


class DicomSource:
    format = "DICOM"

    def __init__(self, spec: SourceSpec):
        self.spec = spec
        self.path = spec.path
        with library_warnings(spec.path) as taken:
            self._open(spec)
        self.warnings += [f"{spec.path}: {text}" for text in taken]

    def _open(self, spec: SourceSpec) -> None:
        """Everything that can fail before a block runs: series, geometry, decoders, one decode and
        the statistics sample (so their library warnings reach the summary)."""
        found = discover(spec.path)
        self.skipped_non_dicom, self.skipped_non_image = found.non_dicom, found.non_image
        self.other_series = len(list_series(found.instances)) - 1
        self.layout = _layout(select_series(found, spec.series), spec)
        self.first = first = self.layout.instances[0]  # speaks for the image: plane 0's, or the slide level
        self.height, self.width, self.depth = self.layout.height, self.layout.width, self.layout.depth
        self.volumes = getattr(self.layout, "volume_count", None)
        """Volumes of a 4-D series (its ``depth`` planes run volume-major); None for one volume."""
        for instance in self.layout.instances:
            check_decodable(instance)
            check_pixel_data(instance)
        self.pixels = PixelFormat.of(first)
        self.bands = self.pixels.bands
        if spec.bands and tuple(spec.bands) != self.bands:
            given = len(self.bands)
            if spec.bands_from:
                raise TilepipeError(f"{spec.path}: {spec.bands_from} selects bands {list(spec.bands)}; "
                                    f"a DICOM image gives all its samples ({given} here)")
            raise TilepipeError(f"--bands {','.join(map(str, spec.bands))}: a DICOM image uses all its samples "
                                f"({','.join(map(str, self.bands))} here)")
        self._cache = FrameCache()
        probe = self.layout.sample_frames(1)[0]
        self.dtype = self._frame(probe).dtype
        mirror = self.pixels.mirror_sum(probe.slope, probe.intercept) if self.pixels.monochrome1 else None
        choices = [choose_scaling(spec.scaling.for_volume(v), spec.window, path=spec.path, modality=first.modality,
                                  color=self.pixels.color, dtype=self.dtype, file_windows=self._file_windows(v),
                                  sample=partial(self._sample, v), mirror_sum=mirror)
                   for v in (range(self.volumes) if self.volumes else (None,))]
        self.scaling, self.window = choices[0].scaling, choices[0].window
        self.volume_scalings = tuple(c.scaling for c in choices) if self.volumes else ()
        """Each volume's scaling, for a 4-D series (:mod:`.dicom_window` says why)."""
        self.volume_windows = (volume_windows([v.labels for v in self.layout.volumes], choices)
                               if self.volumes else None)
        self.warnings = [*self.layout.warnings, *dict.fromkeys(w for c in choices for w in c.warnings)]

    def _file_windows(self, volume: int | None) -> list[tuple[float, float] | None]:
        if volume is None:
            return self.layout.file_windows
        return [p.info.window for p in self.layout.volumes[volume].planes]

    def _decode(self, frame: Frame) -> np.ndarray:
        with library_warnings(self.path):  # in a block: logged, once per process
            raw = decode_frame(frame.path, frame.index)
        expected = (self.first.rows, self.first.columns) + ((self.first.samples,) if self.pixels.color else ())
        if raw.shape != expected:
            raise TilepipeError(f"{frame.path}: frame {frame.index + 1} decodes to {raw.shape}, expected {expected}")
        return self.pixels.values(raw, frame.slope, frame.intercept)

    def _frame(self, frame: Frame) -> np.ndarray:
        return self._cache.get(frame, lambda: self._decode(frame))

    def read(self, window: Window, plane: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        pixels = np.zeros((len(self.bands), window.height, window.width), self.dtype)
        valid = np.zeros((window.height, window.width), bool)
        for frame, part in self.layout.frames_under(window, plane):
            inside = window.intersection(part)
            if inside is None:
                continue
            target = inside.relative_to(window)
            pixels[(slice(None), *target)] = self._frame(frame)[(slice(None), *inside.relative_to(part))]
            valid[target] = True
        mark_non_finite(pixels, valid)  # Float Pixel Data (parametric maps) may hold NaN
        return pixels, valid

    def _sample(self, volume: int | None = None) -> tuple[np.ndarray, str]:
        """Values of up to 8 frames spread through the image (or one volume of a 4-D series),
        thinned to about a million."""
        if volume is None:
            frames = self.layout.sample_frames(SAMPLE_FRAMES)
        else:
            frames = self.layout.sample_frames(SAMPLE_FRAMES, volume)
        values = np.concatenate([self._decode(f).reshape(len(self.bands), -1) for f in frames], axis=1)
        step = max(1, values.shape[1] // SAMPLE_VALUES)
        where = "the image" if volume is None else f"volume {volume}"
        return values[:, ::step], f"{len(frames)} frame(s) spread through {where}"

    @property
    def transfer_syntaxes(self) -> list[str]:
        return sorted({UID(i.transfer_syntax).name for i in self.layout.instances})

    def geometry(self) -> dict:
        first = self.first
        return {"dicom": {
            "kind": self.layout.kind,
            "modality": first.modality,
            "sop_class_uid": first.sop_class_uid,
            "study_instance_uid": first.study_uid,
            "series_instance_uid": first.series_uid,
            "frame_of_reference_uid": first.frame_of_reference_uid,
            "series_description": first.series_description,
            "series_number": first.series_number,
            "photometric_interpretation": first.photometric,
            "transfer_syntaxes": self.transfer_syntaxes,
            "window": self.window.to_json() if self.window else None,
            "scaling": self.scaling.to_json(),
            **({"volume_windows": self.volume_windows} if self.volume_windows else {}),
            **self.layout.geometry(),
            "warnings": self.warnings,
        }}

    def coordinates(self) -> dict[str, np.ndarray]:
        """``z``: each slice's position along the slice normal (mm), when the stack is placed (the
        first volume's, for a 4-D series)."""
        order = getattr(self.layout, "order", None)
        return {"z": np.asarray(order.locations, float)} if order is not None else {}

    def describe(self) -> dict:
        first = self.first
        return {
            "path": self.path,
            "format": self.format,
            "height": self.height,
            "width": self.width,
            "depth": self.depth,
            "band_count": first.samples,
            "bands_used": list(self.bands),
            "dtype": self.dtype.name,
            "scaling": self.scaling.to_json(),
            "modality": first.modality,
            "sop_class": first.sop_class_name,
            "transfer_syntax": ", ".join(self.transfer_syntaxes),
            "compression": ", ".join(self.transfer_syntaxes),
            "photometric_interpretation": first.photometric,
            "series_description": first.series_description,
            "series_instance_uid": first.series_uid,
            **self.layout.describe(),
            "files": len(self.layout.instances),
            "skipped_non_dicom": self.skipped_non_dicom,
            "skipped_non_image_dicom": self.skipped_non_image,
            "other_series": self.other_series,
            "window": self.window.to_json() if self.window else None,
            **({"volume_windows": self.volume_windows} if self.volume_windows else {}),
            "warnings": self.warnings,
        }


def _layout(instances: list[Instance], spec: SourceSpec) -> StackLayout | SlideLayout:
    if instances[0].is_slide:
        if spec.select:
            raise TilepipeError(f"--select {spec.select}: {spec.path} is a whole-slide image, which has one "
                                f"plane; --select picks a volume of a series")
        return SlideLayout(instances, spec.level, spec.path)
    if spec.level:
        raise TilepipeError(f"--level {spec.level}: {spec.path} is not a whole-slide image "
                            f"(--level is for whole-slide DICOM)")
    return StackLayout(instances, spec.path, spec.select)
