"""GeoTIFF (and anything else GDAL reads as a raster) through rasterio, by windows only.

The whole raster is never read: :meth:`GeoTiffSource.read` reads the part of a window that lies
inside the image and pads the rest, and the scaling statistics come from an overview or a grid of
small windows. GDAL dataset handles are not thread-safe, so each thread opens its own handle.
NaN and +-Inf pixels are no-data whether or not the file's nodata tag says so (GDAL masks NaN only
when the tag is NaN). The two rules differ on purpose: the nodata value makes a pixel no-data only
when every band in use holds it (GDAL masks each band on its own; the union of their valid pixels
is kept), a non-finite value in any band in use is enough (it would poison the network's input).
"""

from __future__ import annotations

import os
import threading
from contextlib import nullcontext

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window as RioWindow

from ..errors import TilepipeError, first_line
from ..grid import Window, pixel_centres
from .scaling import finite_columns, mark_non_finite, resolve_scaling
from .spec import SourceSpec

SAMPLE_GRID = 4
SAMPLE_WINDOW = 256
OVERVIEW_MIN_SIDE = 256
SAMPLE_MAX_PIXELS = 2048 * 2048
"""The largest overview read whole for the statistics sample (4 Mpx: 16 MB of 1 band float32). A
file whose only overviews are bigger (just a 2x one, on a 40,000 px scene 400 Mpx) is sampled
with the window grid instead: reading such an overview, even decimated, decodes all of it."""
GDAL_CACHE_MB = 64
SCAN_ROWS = 256
SCAN_COLS = 8192
"""A scan reads windows of at most SCAN_ROWS x SCAN_COLS: 25 MB of 3-band float32, however wide
the scene (a full-width strip of a 40,000 px scene would be 123 MB)."""
SCAN_VALUES = 4096


def bounded_gdal_cache():
    """A scope in which GDAL's block cache holds at most GDAL_CACHE_MB; GDAL's default is 5% of
    the machine's RAM (1.2 GB on 24 GB), so on a big scene that cache, not tilepipe, would fill
    memory as the scene grows. A strip is read top to bottom a few tile rows at a time, and two
    consecutive reads share only the row of the file's blocks that holds the tiles' overlap:
    8192+ px x 512 rows x 3 bands = 13 MB per task, so 64 MB is plenty (256 MB measured the same
    speed and 280 MB more peak RSS on a 12,000^2 scene). A GDAL_CACHEMAX environment variable wins.

    GDAL has one block cache per process and rasterio's ``Env`` resizes it (GDALSetCacheMax64)
    from whichever thread enters, restoring the old size on exit. So the scope is a whole run,
    entered once by the entry point (:func:`tilepipe.run`): a scope per read in the reader threads
    would race, one thread's exit restoring the default while another still reads. rasterio takes
    the size in bytes (a bare 256 would be 256 bytes)."""
    if "GDAL_CACHEMAX" in os.environ:
        return nullcontext()
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20)


class GeoTiffSource:
    format = "GeoTIFF"
    depth = None

    def __init__(self, spec: SourceSpec):
        self.spec = spec
        self.path = spec.path
        self._local = threading.local()
        if "://" not in self.path and not os.path.exists(self.path):
            raise TilepipeError(f"{self.path}: no such file")
        ds = self._dataset()
        self.height, self.width, self.count = ds.height, ds.width, ds.count
        self.bands = self._select_bands(spec.bands, ds.count)
        dtypes = {ds.dtypes[b - 1] for b in self.bands}
        if len(dtypes) > 1:
            raise TilepipeError(f"{self.path}: the selected bands have different data types {sorted(dtypes)}")
        self.dtype = np.dtype(dtypes.pop())
        self.nodata = ds.nodata
        # An alpha band used as an input band reports itself all valid: validity comes from the
        # bands that carry a mask (an RGBA file's alpha still masks its four bands).
        self._mask_bands = [b for b in self.bands if ds.mask_flag_enums[b - 1] != [MaskFlags.all_valid]]
        self._check_readable(ds)
        try:
            self.scaling = resolve_scaling(spec.scaling, self.dtype, len(self.bands), self._sample)
        except TilepipeError as exc:
            raise TilepipeError(f"{self.path}: {exc}") from None

    def _dataset(self):
        ds = getattr(self._local, "ds", None)
        if ds is None:
            try:
                ds = rasterio.open(self.path)
            except RasterioError as exc:
                raise TilepipeError(f"{self.path}: not a readable raster ({first_line(exc)})") from None
            self._local.ds = ds
        return ds

    def _select_bands(self, requested, count) -> tuple[int, ...]:
        if requested:
            bad = [b for b in requested if not 1 <= b <= count]
            if bad and self.spec.bands_from:
                raise TilepipeError(f"{self.path}: {self.spec.bands_from} selects bands {list(requested)}; "
                                    f"the file has {count}")
            if bad:
                raise TilepipeError(f"{self.path}: band {bad[0]} is out of range, the file has {count} band(s) (1-{count})")
            return tuple(requested)  # any number: the model decides whether it takes them
        if count >= 3:
            return (1, 2, 3)
        if count == 1:
            return (1,)
        raise TilepipeError(f"{self.path}: has {count} bands; choose the bands the model takes with --bands")

    def _check_readable(self, ds) -> None:
        """Read the last internal block now, so a truncated file fails before any output exists."""
        bh, bw = ds.block_shapes[0]
        last = RioWindow(((ds.width - 1) // bw) * bw, ((ds.height - 1) // bh) * bh, 1, 1)
        try:
            ds.read(list(self.bands), window=last)
        except RasterioError as exc:
            raise TilepipeError(f"{self.path}: cannot read its last block, the file looks truncated or corrupt ({first_line(exc)})") from None

    def read(self, window: Window, plane: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        pixels = np.zeros((len(self.bands), window.height, window.width), self.dtype)
        valid = np.zeros((window.height, window.width), bool)
        inside = window.intersection(Window(0, 0, self.height, self.width))
        if inside is None:
            return pixels, valid
        rio_window = RioWindow(inside.col, inside.row, inside.width, inside.height)
        rows, cols = inside.relative_to(window)
        ds = self._dataset()
        try:
            pixels[:, rows, cols] = ds.read(list(self.bands), window=rio_window)
            if not self._mask_bands:
                valid[rows, cols] = True
            else:
                valid[rows, cols] = ds.read_masks(self._mask_bands, window=rio_window).max(axis=0) > 0
        except RasterioError as exc:
            raise TilepipeError(f"{self.path}: cannot read window {inside} ({first_line(exc)})") from None
        mark_non_finite(pixels, valid)
        return pixels, valid

    def _sample(self) -> tuple[np.ndarray, str]:
        """Valid, finite pixels from the smallest overview >= 256 px when it holds at most
        SAMPLE_MAX_PIXELS, else from a 4x4 grid of windows; when that sample holds none (a scene mostly NaN or nodata), from a scan of the
        whole image, so that an image is only called all no-data after every pixel was looked at."""
        values, described = self._quick_sample()
        if finite_columns(values).shape[1]:
            return values, described
        return self._scan_sample(described)

    def _scan_sample(self, missed: str) -> tuple[np.ndarray, str]:
        """Every valid pixel of the image, window by window (SCAN_ROWS x SCAN_COLS), thinned to
        about SCAN_VALUES per strip of SCAN_ROWS rows (shared by its windows in proportion to their
        width): memory stays at one window however large the image."""
        kept = []
        for row in range(0, self.height, SCAN_ROWS):
            for col in range(0, self.width, SCAN_COLS):
                window = Window(row, col, min(SCAN_ROWS, self.height - row), min(SCAN_COLS, self.width - col))
                pixels, valid = self.read(window)
                found = finite_columns(pixels[:, valid])
                share = max(1, SCAN_VALUES * window.width // self.width)
                kept.append(found[:, :: max(1, found.shape[1] // share)])
        values = np.concatenate(kept, axis=1)
        where = "a scan of the whole image" + ("" if values.shape[1] else ", which found no valid pixel")
        return values, f"{where} ({missed} held no valid pixel)"

    @property
    def overview_factors(self) -> list[int]:
        """The file's overview decimation factors (empty without overviews)."""
        return self._dataset().overviews(self.bands[0])

    def read_resampled(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The whole image at ``shape`` (GDAL reads it from the overview nearest that size), with
        the same validity as :meth:`read`: masked by the bands that carry a mask, and finite."""
        ds = self._dataset()
        pixels = ds.read(list(self.bands), out_shape=(len(self.bands), *shape))
        if self._mask_bands:
            masks = ds.read_masks(self._mask_bands, out_shape=(len(self._mask_bands), *shape))
            valid = masks.max(axis=0) > 0
        else:
            valid = np.ones(shape, bool)
        mark_non_finite(pixels, valid)
        return pixels, valid

    def _quick_sample(self) -> tuple[np.ndarray, str]:
        ds = self._dataset()
        factors = [f for f in self.overview_factors if min(ds.height, ds.width) // f >= OVERVIEW_MIN_SIDE]
        if factors and (ds.height // max(factors)) * (ds.width // max(factors)) <= SAMPLE_MAX_PIXELS:
            f = max(factors)
            shape = (ds.height // f, ds.width // f)
            pixels, valid = self.read_resampled(shape)
            return pixels[:, valid], f"overview 1/{f} ({shape[1]}x{shape[0]} px)"
        size = min(SAMPLE_WINDOW, ds.height, ds.width)
        samples = []
        for i in range(SAMPLE_GRID):
            for j in range(SAMPLE_GRID):
                row = (2 * i + 1) * ds.height // (2 * SAMPLE_GRID) - size // 2
                col = (2 * j + 1) * ds.width // (2 * SAMPLE_GRID) - size // 2
                pixels, valid = self.read(Window(max(row, 0), max(col, 0), size, size))
                samples.append(pixels[:, valid])
        return np.concatenate(samples, axis=1), f"{SAMPLE_GRID * SAMPLE_GRID} windows of {size}x{size} px"

    def geometry(self) -> dict:
        ds = self._dataset()
        crs = ds.crs
        return {
            "crs_wkt": crs.to_wkt() if crs else None,
            "epsg": crs.to_epsg() if crs else None,
            "transform": list(ds.transform)[:6],
            "source_nodata": self.nodata,
        }

    def coordinates(self) -> dict[str, np.ndarray]:
        """Pixel-centre x and y in CRS units, when the transform is north-up (no rotation)."""
        return pixel_centres(self._dataset().transform, self.height, self.width)

    def describe(self) -> dict:
        ds = self._dataset()
        return {
            "path": self.path,
            "format": self.format,
            "driver": ds.driver,
            "height": self.height,
            "width": self.width,
            "band_count": self.count,
            "bands_used": list(self.bands),
            "dtype": self.dtype.name,
            "nodata": self.nodata,
            "layout": "tiled {}x{}".format(*ds.block_shapes[0]) if ds.profile.get("tiled") else "striped",
            "compression": ds.compression.value if ds.compression else "none",
            "overviews": ds.overviews(self.bands[0]),
            "crs": ds.crs.to_string() if ds.crs else None,
            "scaling": self.scaling.to_json(),
        }
