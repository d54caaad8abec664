"""How the plane is cut into work: the :class:`Plan` of strips, blocks, units and tasks. Pure
geometry, no I/O; the tile lattice it cuts along is :mod:`tilepipe.grid`.

* the **blocks**: the units of writing and of resuming. The plane is cut into vertical *strips*
  of whole chunk columns (``--block-size`` wide at most, balanced), and each strip into *bands*
  one chunk row tall; a block is one band of one strip, so its core is whole Zarr chunks and
  exactly one task writes each chunk. A block is recorded in the store once its chunks are.
* the **units**: the units of computing. A unit is a run of consecutive blocks of one strip (a
  whole strip by default) that one task streams from top to bottom, one lattice tile row at a
  time: every lattice tile that touches the strip is computed once per unit, so a tile is
  computed twice only where it straddles a strip edge (or a unit edge, where a strip is split to
  give a cluster more tasks or to resume a crashed run). A *task* runs one or more units; small
  units (a 512 px CT slice is a single tile) are grouped so that their tiles fill batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from itertools import product

from .grid import Block, TileGrid, Unit, Window, align_up, axis_tile_starts, block_index, touching


TASK_TILES = 64
"""Tiles a task should hold at least (when units are small, e.g. one tile per CT slice), so that
batches fill across units instead of running a forward pass per slice."""


@dataclass(frozen=True)
class Plan:
    """The whole split of an image: lattice, chunks, strips, blocks. Depends on options and shape only."""

    height: int
    width: int
    grid: TileGrid
    chunk_size: int = 512
    block_size: int = 8192
    """The widest a strip may be (the strips of a plane are balanced, whole chunks each). The run
    options' defaults for both are these (:mod:`tilepipe.options` reads them)."""
    depth: int | None = None
    """Number of planes for a stack (a DICOM series); ``None`` for a single 2-D image."""
    volumes: int | None = None
    """Volumes of a 4-D series: its ``depth`` planes run volume-major, ``depth // volumes`` slices
    each. Blocks still address planes; only the store's shape tells volumes from slices."""
    row_starts: tuple[int, ...] = field(init=False, repr=False)
    col_starts: tuple[int, ...] = field(init=False, repr=False)
    tile_height: int = field(init=False)
    tile_width: int = field(init=False)
    strip_width: int = field(init=False)

    def __post_init__(self) -> None:
        from .errors import TilepipeError

        if self.height <= 0 or self.width <= 0:
            raise TilepipeError(f"the image has an empty plane ({self.height}x{self.width})")
        if self.volumes is not None and (not self.depth or self.depth % self.volumes):
            raise TilepipeError(f"{self.depth} planes do not make {self.volumes} volumes of equal depth")
        if self.chunk_size <= 0 or self.block_size <= 0 or self.block_size % self.chunk_size:
            raise TilepipeError(
                f"--block-size {self.block_size} must be a positive multiple of --chunk-size {self.chunk_size}"
            )
        g = self.grid
        rows, th = axis_tile_starts(self.height, g.tile_size, g.overlap, g.output_stride)
        cols, tw = axis_tile_starts(self.width, g.tile_size, g.overlap, g.output_stride)
        object.__setattr__(self, "row_starts", rows)
        object.__setattr__(self, "col_starts", cols)
        object.__setattr__(self, "tile_height", th)
        object.__setattr__(self, "tile_width", tw)
        # balanced strips: as few as --block-size allows, as even as whole chunks allow
        strips = math.ceil(self.width / self.block_size)
        object.__setattr__(self, "strip_width", align_up(math.ceil(self.width / strips), self.chunk_size))

    @property
    def bands(self) -> int:
        """Block rows: one chunk row each."""
        return math.ceil(self.height / self.chunk_size)

    @property
    def strips(self) -> int:
        return math.ceil(self.width / self.strip_width)

    @property
    def planes(self) -> int:
        return self.depth or 1

    @property
    def stack_shape(self) -> tuple[int, ...]:
        """The mask's leading axes: (), (z,) or (volume, z)."""
        if self.depth is None:
            return ()
        return (self.depth,) if self.volumes is None else (self.volumes, self.depth // self.volumes)

    @property
    def block_grid_shape(self) -> tuple[int, ...]:
        shape = (self.bands, self.strips)
        return shape if self.depth is None else (self.depth, *shape)

    @property
    def block_count(self) -> int:
        return self.planes * self.bands * self.strips

    def _strip_cols(self, strip: int) -> tuple[int, int]:
        left = strip * self.strip_width
        return left, min(left + self.strip_width, self.width)

    def block(self, index: tuple[int, ...]) -> Block:
        band, strip = index[-2:]
        left, right = self._strip_cols(strip)
        top = band * self.chunk_size
        core = Window(top, left, min(self.chunk_size, self.height - top), right - left)
        return Block(index=tuple(index), **self._span(core))

    def blocks(self):
        """Every block, plane by plane, row-major. A generator: a huge scene never lists them all."""
        for index in product(*(range(n) for n in self.block_grid_shape)):
            yield self.block(index)

    def unit(self, plane: int | None, strip: int, band_start: int, band_stop: int) -> Unit:
        left, right = self._strip_cols(strip)
        top, bottom = band_start * self.chunk_size, min(band_stop * self.chunk_size, self.height)
        core = Window(top, left, bottom - top, right - left)
        return Unit(plane=plane, strip=strip, band_start=band_start, band_stop=band_stop, **self._span(core))

    def _span(self, core: Window) -> dict:
        """The :class:`LatticeSpan` fields of ``core``: the lattice tiles that touch it."""
        return {"core": core, "tile_height": self.tile_height, "tile_width": self.tile_width,
                "tile_rows": touching(self.row_starts, self.tile_height, core.row, core.row_stop),
                "tile_cols": touching(self.col_starts, self.tile_width, core.col, core.col_stop)}

    def units(self, todo=None, min_units: int = 1) -> list[Unit]:
        """The runs of consecutive blocks in ``todo`` (all blocks when None), one per strip and plane
        when nothing was done yet; halved, longest first, until there are ``min_units`` of them (each
        cut costs the tile rows that straddle it, computed on both sides)."""
        wanted = None if todo is None else {tuple(i) for i in todo}
        planes = [None] if self.depth is None else range(self.depth)
        units = []
        for plane, strip in product(planes, range(self.strips)):
            start = None
            for band in range(self.bands + 1):
                inside = band < self.bands and (wanted is None or block_index(plane, band, strip) in wanted)
                if inside and start is None:
                    start = band
                elif not inside and start is not None:
                    units.append((plane, strip, start, band))
                    start = None
        while len(units) < min_units:
            longest = max(range(len(units)), key=lambda i: units[i][3] - units[i][2], default=None)
            if longest is None or units[longest][3] - units[longest][2] < 2:
                break
            plane, strip, a, b = units[longest]
            units[longest:longest + 1] = [(plane, strip, a, (a + b) // 2), (plane, strip, (a + b) // 2, b)]
        return [self.unit(*u) for u in units]

    def tasks(self, todo=None, slots: int = 1, split: bool = False) -> list[tuple[Unit, ...]]:
        """Units grouped into tasks. Consecutive small units share a task until it holds
        ``TASK_TILES`` tiles, as long as ``2 x slots`` tasks remain; with ``split`` (a cluster),
        strips are cut into more units until there are ``2 x slots`` of them."""
        units = self.units(todo, 2 * slots if split else 1)
        if not units:
            return []
        mean_tiles = sum(u.tile_count for u in units) / len(units)
        group = max(1, min(math.ceil(TASK_TILES / mean_tiles), len(units) // (2 * slots)))
        return [tuple(units[i:i + group]) for i in range(0, len(units), group)]

    @cached_property
    def tiles_per_plane(self) -> int:
        """Tiles computed for one plane with one unit per strip: a tile straddling a strip edge
        is computed by both strips, every other tile once."""
        per_strip = [len(touching(self.col_starts, self.tile_width, *self._strip_cols(s))) for s in range(self.strips)]
        return len(self.row_starts) * sum(per_strip)

    @property
    def tiles_computed(self) -> int:
        return self.planes * self.tiles_per_plane

    @property
    def lattice_tiles(self) -> int:
        """Distinct tiles on the lattice (what a single whole-image pass would compute)."""
        return self.planes * len(self.row_starts) * len(self.col_starts)

    @property
    def overlap_cost_factor(self) -> float:
        """Pixels pushed through the network per image pixel (1.0 would be no overlap, no halo)."""
        return self.tiles_per_plane * self.tile_height * self.tile_width / (self.height * self.width)

    @property
    def megapixels(self) -> float:
        return self.planes * self.height * self.width / 1e6
