"""The mask as a Cloud Optimized GeoTIFF: what GIS tools, web map tilers and cloud readers open.

The file is a uint8 paletted band (the :mod:`.colors` table, nodata 255 transparent), tiled 512 x
512, deflated, with overviews resampled by *mode*: an overview pixel is the most frequent class
beneath it, never an average of label numbers, which would invent classes at every boundary.

The mask is copied one 512 x 512 tile at a time (one Zarr read each) into a tiled GeoTIFF in a
private folder beside OUT; GDAL's COG driver then builds the overviews and lays the file out in
COG order, and only the finished file is renamed onto OUT. A crash leaves at most that hidden
``.OUT.*.tmp`` folder, never a file named OUT that looks complete.

Class names: GDAL keeps category names in a ``.aux.xml`` sidecar, which a single COG cannot carry,
so they are written into the file as band metadata ``CLASS_<value>=<name>`` (the GDAL_METADATA
tag, shown by ``gdalinfo`` and ``rasterio``), and the band description reads "class label".
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.shutil import copy
from rasterio.transform import Affine

from ..errors import TilepipeError, first_line
from ..labels import NO_LABEL
from ..sink import MaskStore
from .colors import colormap

TILE = 512


def export(store: MaskStore, out: str) -> str:
    """Write the mask of ``store`` to ``out`` as a COG; returns ``out``."""
    if not store.group.attrs.get("crs_wkt"):
        raise TilepipeError(f"{store.url}: no georeferencing; use --to dicom-seg or png")
    with staged_output(out) as (folder, path):
        tiled = os.path.join(folder, "tiled.tif")
        try:
            _write_tiled(store, tiled)
            copy(tiled, path, driver="COG", BLOCKSIZE=TILE, COMPRESS="DEFLATE",
                 OVERVIEW_RESAMPLING="MODE", NUM_THREADS="ALL_CPUS")
        except RasterioError as exc:
            raise TilepipeError(f"{out}: cannot write the COG ({first_line(exc)})") from None
    return str(out)


def _write_tiled(store: MaskStore, path: str) -> None:
    """A tiled GeoTIFF of the mask with the colour table, class names, CRS and transform, written
    tile by tile so memory stays at one tile whatever the size of the mask."""
    attrs, mask = store.group.attrs, store.mask
    height, width = mask.shape
    profile = dict(driver="GTiff", height=height, width=width, count=1, dtype="uint8", nodata=NO_LABEL,
                   crs=CRS.from_wkt(attrs["crs_wkt"]), transform=Affine(*attrs["transform"]),
                   tiled=True, blockxsize=TILE, blockysize=TILE, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        for _, window in dst.block_windows(1):
            dst.write(mask[window.toslices()], 1, window=window)
        dst.write_colormap(1, colormap(attrs))
        dst.set_band_description(1, "class label")
        dst.update_tags(1, **{f"CLASS_{value}": name for value, name in enumerate(attrs["class_names"])})


@contextmanager
def staged_output(out: str) -> Iterator[tuple[str, str]]:
    """Yield ``(folder, path)``: a private temporary folder beside ``out`` (same filesystem, so the
    final rename is atomic) and the path to write the finished file to. On success that file is
    renamed onto ``out``; the folder, with any side files GDAL left in it, is removed either way.
    Shared by the exporters that write one local file."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise TilepipeError(f"{out}: the folder {parent} does not exist")
    if os.path.isdir(out):
        raise TilepipeError(f"{out}: is a folder; give a file name")
    folder = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp", dir=parent)
    try:
        path = os.path.join(folder, os.path.basename(out))
        yield folder, path
        os.replace(path, out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
