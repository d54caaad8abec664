"""The mask's multiscale pyramid: levels of 2x, 4x, 8x ... fewer pixels, for viewers at any zoom.

Each level is the **2x2 mode** of the level above it (GDAL's ``mode`` overview rule, applied level by
level): the most frequent class of the four pixels, ignoring no-data (255); a tie goes to the
smaller class number; four no-data pixels stay no-data. Averaging is never used: the mean of class
3 and class 5 is class 4, a class that was not there. Halving stops once the longest side is at most
:data:`SMALLEST_SIDE` pixels, so a mask that already fits has no extra level.

Levels are derived data, built after every block of level 0 is stored, level by level, **one
target chunk at a time**. Pyramid chunks are half the mask's chunk side, so a chunk of level 1 is
the reduction of exactly one chunk of the mask, and a chunk of a deeper level of the 2x2 chunks of
the level above, read one by one (whole chunks, aligned). Each target chunk is written once and
never read back to be patched; memory is about one mask chunk and one pyramid chunk, whatever the
size of the image. A resumed run rebuilds the pyramid whole (the arrays are recreated, so no stale chunk
survives); it costs one more pass over the mask at a third of its size.

Layout (``pyramid/1/mask``, ``pyramid/2/mask``, ...): each level is a group, so ``xarray.open_zarr(
store, group="pyramid/2")`` opens a level with its own ``x``/``y`` coordinates and CRS (GeoTIFF
scenes). :mod:`tilepipe.ngff` describes the levels for OME-NGFF and GeoZarr readers.
"""

from __future__ import annotations

import itertools

import numpy as np
import zarr

from .ngff import describe_levels
from .grid import pixel_centres
from .labels import NO_LABEL
from .sink import MaskStore, without_empty_chunk_check, write_grid_mapping

GROUP = "pyramid"
SMALLEST_SIDE = 512
RESAMPLING = "mode"
SLAB_ROWS = 32
"""Output rows reduced at once: the mode's temporaries stay a few (32, chunk / 2) arrays."""


def level_shapes(shape: tuple[int, ...], smallest: int = SMALLEST_SIDE) -> list[tuple[int, ...]]:
    """Shapes of levels 1, 2, ... of a mask of ``shape``: the last two axes halved (rounded up)
    until the longest side is at most ``smallest``; leading axes (planes, volumes) are kept."""
    lead, (height, width) = tuple(shape[:-2]), shape[-2:]
    shapes = []
    while max(height, width) > smallest:
        height, width = -(-height // 2), -(-width // 2)
        shapes.append((*lead, height, width))
    return shapes


def level_path(level: int) -> str:
    """Where level ``level`` (1 = 2x) lives in the store; level 0 is the root's ``mask``."""
    return "mask" if level == 0 else f"{GROUP}/{level}/mask"


def mode_2x2(labels: np.ndarray) -> np.ndarray:
    """The 2x2 mode of ``labels`` (2h, 2w) uint8: (h, w), no-data ignored, ties to the smaller
    class. Four strided views and a running best: a few (h, w) arrays, no (h, w, 4) stack.

    Each candidate gets the key ``count * 256 + (255 - value)`` (count 1..4 among the four), 0 for
    no-data: the largest key is the most frequent class, the smaller one on a tie."""
    quads = [labels[r::2, c::2] for r in (0, 1) for c in (0, 1)]
    best = best_key = None
    for value in quads:
        key = np.zeros(value.shape, np.uint16)
        for other in quads:
            key += value == other
        key <<= 8
        key += 255 - value
        key[value == NO_LABEL] = 0
        if best is None:
            best, best_key = value.copy(), key
        else:
            better = key > best_key
            np.copyto(best, value, where=better)
            np.maximum(best_key, key, out=best_key)
    return best


def _reduce(source: zarr.Array, target: zarr.Array, store: MaskStore) -> None:
    """Write ``target`` chunk by chunk: each target chunk is the 2x2 mode of the (up to) 2x2 source
    chunks beneath it, read one source chunk at a time; each write retried as ``store`` retries."""
    chunk_h, chunk_w = target.chunks[-2:]
    height, width = target.shape[-2:]
    rows, cols = -(-height // chunk_h), -(-width // chunk_w)
    half_h, half_w = -(-source.chunks[-2] // 2), -(-source.chunks[-1] // 2)
    for lead, i, j in itertools.product(np.ndindex(*target.shape[:-2]), range(rows), range(cols)):
        out_h, out_w = min(chunk_h, height - i * chunk_h), min(chunk_w, width - j * chunk_w)
        reduced = np.full((out_h, out_w), NO_LABEL, np.uint8)
        for r0 in range(0, out_h, half_h):
            for c0 in range(0, out_w, half_w):
                rows_in = slice(2 * (i * chunk_h + r0), 2 * (i * chunk_h + r0 + half_h))
                cols_in = slice(2 * (j * chunk_w + c0), 2 * (j * chunk_w + c0 + half_w))
                piece = source[lead + (rows_in, cols_in)]
                if piece.shape[0] % 2 or piece.shape[1] % 2:  # the image's last row/column: pad with no-data
                    padded = np.full((piece.shape[0] + piece.shape[0] % 2, piece.shape[1] + piece.shape[1] % 2),
                                     NO_LABEL, np.uint8)
                    padded[:piece.shape[0], :piece.shape[1]] = piece
                    piece = padded
                for top in range(0, piece.shape[0], 2 * SLAB_ROWS):  # slabs: small temporaries
                    part = mode_2x2(piece[top:top + 2 * SLAB_ROWS])
                    reduced[r0 + top // 2:r0 + top // 2 + part.shape[0], c0:c0 + part.shape[1]] = part
        if (reduced != NO_LABEL).any():  # an all-no-data chunk keeps the fill value, unstored
            where = lead + (slice(i * chunk_h, i * chunk_h + out_h), slice(j * chunk_w, j * chunk_w + out_w))
            store.retried(lambda: target.__setitem__(where, reduced), f"pyramid chunk {where}")


def _level_geometry(group: zarr.Group, level: int, geometry: dict) -> None:
    """A level's own coordinates and CRS (GeoTIFF scenes): the transform's pixel size times the
    factor, the same top-left corner (a level pixel covers ``factor`` x ``factor`` level-0 pixels)."""
    transform = geometry.get("transform")
    if not transform:
        return
    factor = 2 ** level
    a, b, c, d, e, f = transform
    scaled = [a * factor, b * factor, c, d * factor, e * factor, f]
    for name, values in pixel_centres(scaled, *group["mask"].shape[-2:]).items():  # north-up only, as at level 0
        group.create_array(name, data=values, chunks=values.shape, dimension_names=[name], overwrite=True)
    if geometry.get("crs_wkt"):
        write_grid_mapping(group, "mask", geometry["crs_wkt"], scaled)


def build_pyramid(store: MaskStore) -> list[tuple[int, ...]]:
    """(Re)build every level of ``store``'s pyramid from its finished level 0; returns the shapes."""
    store.check_owner()  # only the run that owns the store writes into it
    shapes = level_shapes(store.mask.shape)
    if GROUP in store.group:
        store.retried(lambda: store.group.__delitem__(GROUP), "removing the old pyramid")
    base = store.group["mask"]
    source = store.mask
    for level, shape in enumerate(shapes, start=1):
        target = store.retried(lambda: _new_level(store.group, base, level, shape), f"creating pyramid level {level}")
        _reduce(source, without_empty_chunk_check(target), store)  # all-no-data chunks are skipped here already
        source = target
    store.retried(lambda: describe_levels(store.group, [level_path(n) for n in range(len(shapes) + 1)],
                                          list(base.metadata.dimension_names), RESAMPLING), "describing the pyramid")
    return shapes


def _new_level(root: zarr.Group, base: zarr.Array, level: int, shape: tuple[int, ...]) -> zarr.Array:
    """The empty array of level ``level`` with its geometry (overwritten whole if a try left some)."""
    group = root.require_group(f"{GROUP}/{level}")
    chunks = base.chunks[:-2] + tuple(min(max(1, c // 2), n) for c, n in zip(base.chunks[-2:], shape[-2:]))
    target = group.create_array("mask", shape=shape, chunks=chunks, dtype="uint8", fill_value=NO_LABEL,
                                dimension_names=base.metadata.dimension_names, overwrite=True,
                                attributes={**base.attrs, "resampling": RESAMPLING, "level": level,
                                            "factor": 2 ** level})
    _level_geometry(group, level, dict(root.attrs))
    return target
