"""Where a tile is cut: the tile lattice and the spans of it that blocks and units cover. Pure
geometry, no I/O.

The **tile lattice** is the set of windows the network sees. It is fixed by the tile size, the
overlap, the network's output stride and the image origin alone, so a pixel's prediction never
depends on how the work is split into blocks or how many workers run them. Tile starts are
multiples of the stride ``tile - overlap`` (itself a multiple of the output stride, so every tile
sees the same sub-pixel phase of the network's output grid); the last tile of a row or column is
snapped inward to the first aligned start that still reaches the image edge, which lets it
overhang the edge by less than one output stride (read boundlessly, cropped back). An axis
shorter than the tile gets a single tile of the axis length rounded up to the output stride: the
image is padded only that much and cropped back, so a small image costs what a whole-image pass
costs.

A :class:`LatticeSpan` is a core window and the lattice tiles that touch it; a :class:`Block`
(the unit of writing) and a :class:`Unit` (the unit of computing) are spans. How the plane is cut
into them is :mod:`tilepipe.partition`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np


def align_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


@dataclass(frozen=True, order=True)
class Window:
    """A half-open pixel rectangle ``[row, row + height) x [col, col + width)``.

    It may extend past the image (negative start or beyond the edge): sources read such windows
    boundlessly and mark the outside as invalid.
    """

    row: int
    col: int
    height: int
    width: int

    @property
    def row_stop(self) -> int:
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        return self.col + self.width

    @property
    def area(self) -> int:
        return self.height * self.width

    def intersection(self, other: Window) -> Window | None:
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1, c1 = min(self.row_stop, other.row_stop), min(self.col_stop, other.col_stop)
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(r0, c0, r1 - r0, c1 - c0)

    def relative_to(self, outer: Window) -> tuple[slice, slice]:
        """Array slices that select this window inside an array covering ``outer``."""
        r, c = self.row - outer.row, self.col - outer.col
        return slice(r, r + self.height), slice(c, c + self.width)

    def __str__(self) -> str:
        return f"rows {self.row}:{self.row_stop}, cols {self.col}:{self.col_stop}"


def axis_tile_starts(length: int, tile: int, overlap: int, align: int) -> tuple[tuple[int, ...], int]:
    """Tile starts along one axis and the tile extent used on that axis.

    Starts are ``0, s, 2s, ...`` (``s = tile - overlap``) while the tile ends inside the axis, then
    one last start, aligned up to ``align``, whose tile reaches the edge. Returns ``(starts, extent)``.
    """
    extent = min(tile, align_up(length, align))
    if extent >= length:
        return (0,), extent
    stride = tile - overlap
    starts = list(range(0, length - extent, stride))
    last = align_up(length - extent, align)
    if last > starts[-1]:
        starts.append(last)
    return tuple(starts), extent


def touching(starts: tuple[int, ...], extent: int, lo: int, hi: int) -> tuple[int, ...]:
    """The starts whose tile ``[s, s + extent)`` intersects ``[lo, hi)``."""
    first = bisect.bisect_right(starts, lo - extent)
    last = bisect.bisect_left(starts, hi)
    return starts[first:last]


@dataclass(frozen=True)
class TileGrid:
    """The validated tiling options: tile size, overlap and the network's output stride (the run
    options' defaults are declared in :mod:`tilepipe.options`, not here)."""

    tile_size: int
    overlap: int
    output_stride: int

    def __post_init__(self) -> None:
        from .errors import TilepipeError

        t, o, a = self.tile_size, self.overlap, self.output_stride
        if t <= 0 or t % a:
            raise TilepipeError(f"--tile-size {t} must be a positive multiple of the output stride {a}")
        if not 0 <= o < t or (t - o) % a:
            raise TilepipeError(
                f"--overlap {o} must be in [0, {t}) and leave a stride (tile - overlap = {t - o}) "
                f"that is a multiple of the output stride {a}"
            )

    @property
    def stride(self) -> int:
        """The step between neighbouring tiles' starts."""
        return self.tile_size - self.overlap


def pixel_centres(transform, height: int, width: int) -> dict[str, np.ndarray]:
    """x and y of the pixel centres under a north-up affine ``(a, b, c, d, e, f)`` (GDAL order as
    rasterio writes it); empty when the affine rotates, where no 1-D coordinates exist."""
    a, b, c, d, e, f = transform[:6]
    if b or d:
        return {}
    return {"x": c + a * (np.arange(width) + 0.5), "y": f + e * (np.arange(height) + 0.5)}


def block_index(plane: int | None, band: int, strip: int) -> tuple[int, ...]:
    """A block's index: ``(band, strip)`` of a 2-D image, ``(plane, band, strip)`` of a stack."""
    return (band, strip) if plane is None else (plane, band, strip)


@dataclass(frozen=True, kw_only=True)
class LatticeSpan:
    """A core and the lattice tiles that touch it: what a block and a unit share."""

    core: Window
    tile_rows: tuple[int, ...]
    tile_cols: tuple[int, ...]
    tile_height: int
    tile_width: int

    @property
    def tile_count(self) -> int:
        return len(self.tile_rows) * len(self.tile_cols)

    @property
    def tiles(self) -> list[Window]:
        """The tiles in lattice order (row-major), which fixes the blending order of a pixel."""
        return [tile for row in self.tile_rows for tile in self.row_tiles(row)]

    @property
    def read_window(self) -> Window:
        """The union of the tiles: the core plus the halo the tiles need."""
        r0 = self.tile_rows[0]
        row = self.row_window(r0)
        return Window(r0, row.col, self.tile_rows[-1] + self.tile_height - r0, row.width)

    def row_window(self, row: int) -> Window:
        """What one tile row reads: the union of its tiles (the strip plus the halo they need)."""
        c0 = self.tile_cols[0]
        return Window(row, c0, self.tile_height, self.tile_cols[-1] + self.tile_width - c0)

    def row_tiles(self, row: int) -> list[Window]:
        """The tiles of one tile row, left to right (lattice order)."""
        return [Window(row, c, self.tile_height, self.tile_width) for c in self.tile_cols]


@dataclass(frozen=True)
class Block(LatticeSpan):
    """One unit of writing: a band of whole chunks of one strip, plus the lattice tiles that touch it."""

    index: tuple[int, ...]
    """(band, strip), or (plane, band, strip) for a stack of planes."""

    @property
    def plane(self) -> int | None:
        return self.index[0] if len(self.index) == 3 else None


@dataclass(frozen=True)
class Unit(LatticeSpan):
    """A run of consecutive blocks of one strip of one plane, computed in one top-to-bottom pass.

    The unit computes every lattice tile that touches its core once, one tile row at a time, and
    finishes (and writes) each of its blocks as soon as the last tile row that covers it is in."""

    plane: int | None
    strip: int
    band_start: int
    band_stop: int

    @property
    def block_indices(self) -> list[tuple[int, ...]]:
        return [block_index(self.plane, band, self.strip) for band in range(self.band_start, self.band_stop)]

    def final_rows(self, position: int) -> int:
        """Rows above this one are final once tile row ``tile_rows[position]`` is in: no later tile
        row covers them (the next one starts there; after the last, the whole core is final)."""
        nxt = position + 1
        return min(self.tile_rows[nxt], self.core.row_stop) if nxt < len(self.tile_rows) else self.core.row_stop
