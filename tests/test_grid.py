"""Property tests of the tile lattice, the blocks, units and tasks (pure geometry)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilepipe.errors import TilepipeError
from tilepipe.grid import TileGrid, Window, axis_tile_starts
from tilepipe.partition import Plan


@st.composite
def plans(draw):
    stride_unit = draw(st.sampled_from([1, 8, 16]))
    tile = stride_unit * draw(st.integers(2, 12))
    overlap = stride_unit * draw(st.integers(0, tile // stride_unit - 1))
    chunk = draw(st.sampled_from([8, 16, 32, 64]))
    block = chunk * draw(st.integers(1, 4))
    height, width = draw(st.integers(1, 200)), draw(st.integers(1, 200))
    return Plan(height, width, TileGrid(tile, overlap, stride_unit), chunk, block)


def lattice(plan) -> list[Window]:
    return [Window(r, c, plan.tile_height, plan.tile_width) for r in plan.row_starts for c in plan.col_starts]


def lattice_touching(plan, core: Window) -> set[Window]:
    """The lattice tiles that overlap ``core``, by a plain scan of every row start and every column
    start (a rectangle meets another exactly when their row spans and their column spans both
    overlap): the whole 2-D lattice against every core is too slow for hypothesis' examples."""
    rows = [r for r in plan.row_starts if r < core.row_stop and core.row < r + plan.tile_height]
    cols = [c for c in plan.col_starts if c < core.col_stop and core.col < c + plan.tile_width]
    return {Window(r, c, plan.tile_height, plan.tile_width) for r in rows for c in cols}


def done_sets(plan, draw_bits: int):
    """A deterministic 'already done' subset of the blocks, from a bit pattern."""
    indices = [b.index for b in plan.blocks()]
    return [i for k, i in enumerate(indices) if not (draw_bits >> (k % 61)) & 1]


@settings(max_examples=100, deadline=None)
@given(plans())
def test_every_pixel_in_exactly_one_block_core(plan):
    owners = np.zeros((plan.height, plan.width), np.int32)
    for block in plan.blocks():
        c = block.core
        owners[c.row:c.row_stop, c.col:c.col_stop] += 1
        assert c.row % plan.chunk_size == 0 and c.col % plan.chunk_size == 0  # cores start on chunk borders
        assert c.height % plan.chunk_size == 0 or c.row_stop == plan.height  # and hold whole chunks
        assert c.width % plan.chunk_size == 0 or c.col_stop == plan.width
        assert c.width <= plan.block_size
    assert (owners == 1).all()


@settings(max_examples=100, deadline=None)
@given(plans())
def test_block_tiles_are_the_lattice_tiles_touching_its_core(plan):
    for block in plan.blocks():
        tiles = block.tiles
        assert len(set(tiles)) == len(tiles)
        assert set(tiles) == lattice_touching(plan, block.core)


@settings(max_examples=100, deadline=None)
@given(plans(), st.integers(0, 2**61 - 1), st.integers(1, 8), st.booleans())
def test_every_block_to_do_is_in_exactly_one_unit_of_one_task(plan, bits, slots, split):
    todo = done_sets(plan, bits)
    tasks = plan.tasks(todo, slots, split)
    blocks = [i for units in tasks for unit in units for i in unit.block_indices]
    assert sorted(blocks) == sorted(todo)  # each block written by exactly one unit (one task)
    for units in tasks:
        for unit in units:
            cores = [plan.block(i).core for i in unit.block_indices]
            assert {c.col for c in cores} == {unit.core.col} and cores[0].row == unit.core.row
            assert all(a.row_stop == b.row for a, b in zip(cores, cores[1:]))  # consecutive bands of one strip
            assert cores[-1].row_stop == unit.core.row_stop


@settings(max_examples=100, deadline=None)
@given(plans(), st.integers(0, 2**61 - 1), st.integers(1, 8))
def test_a_unit_computes_each_tile_touching_it_once_and_they_cover_it(plan, bits, slots):
    for units in plan.tasks(done_sets(plan, bits), slots, split=True):
        for unit in units:
            tiles = [t for row in unit.tile_rows for t in unit.row_tiles(row)]
            assert len(set(tiles)) == len(tiles) == unit.tile_count
            assert set(tiles) == lattice_touching(plan, unit.core)
            cover = np.zeros((unit.core.height, unit.core.width), bool)
            for t in tiles:
                inside = t.intersection(unit.core)
                cover[inside.relative_to(unit.core)] = True
            assert cover.all()  # its tiles cover every pixel of its core
            for row in unit.tile_rows:
                read = unit.row_window(row)
                assert all(t.intersection(read) == t for t in unit.row_tiles(row))  # one read per tile row


@settings(max_examples=100, deadline=None)
@given(plans())
def test_rows_are_final_once_no_later_tile_row_touches_them(plan):
    for (unit,) in [(u,) for t in plan.tasks(slots=4, split=True) for u in t]:
        finals = [unit.final_rows(p) for p in range(len(unit.tile_rows))]
        assert finals == sorted(finals) and finals[-1] == unit.core.row_stop
        for p, final in enumerate(finals):
            assert all(r >= final for r in unit.tile_rows[p + 1:])  # no later tile row reaches above it
            assert final <= unit.tile_rows[p] + unit.tile_height  # the rows it closes are in this tile row's read


@settings(max_examples=200, deadline=None)
@given(plans())
def test_tiles_computed_counts_each_tile_once_per_strip_it_touches(plan):
    """The oracle: strips from the block cores, tiles from the lattice, counted by brute force."""
    strips = {(b.core.col, b.core.col_stop) for b in plan.blocks()}
    expected = sum(1 for t in lattice(plan) for c0, c1 in strips if t.col < c1 and c0 < t.col_stop)
    assert plan.tiles_computed == expected
    assert sum(u.tile_count for u in plan.units()) == expected  # one unit per strip by default
    if len(strips) == 1:
        assert plan.tiles_computed == plan.lattice_tiles


@pytest.mark.parametrize("side", [16384, 40000])
def test_default_plan_computes_each_lattice_tile_once_up_to_5_percent(side):
    plan = Plan(side, side, TileGrid(512, 64, 8))  # the defaults: chunk 512, strips up to 8192 px
    assert plan.tiles_computed <= 1.05 * plan.lattice_tiles
    assert plan.strip_width * plan.tile_height * 4 * 22 < 400e6  # open rows of a strip: classes + 1 float32 rows


def test_a_crop_of_two_default_blocks_computes_the_lattice_once():
    plan = Plan(2560, 2560, TileGrid(512, 64, 8))
    assert plan.tiles_computed == plan.lattice_tiles == 36  # MONAI's 6 x 6 windows at the same tile and overlap


def test_small_slices_share_tasks_so_batches_fill():
    plan = Plan(512, 512, TileGrid(512, 64, 8), depth=300)
    tasks = plan.tasks(slots=2)
    assert len(tasks) >= 4 and all(len(units) > 1 for units in tasks)
    assert sum(len(units) for units in tasks) == 300


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2000), st.sampled_from([1, 8, 16]), st.integers(1, 40), st.integers(0, 39))
def test_lattice_is_aligned_and_reaches_the_edge(length, align, tile_units, overlap_units):
    tile = align * tile_units
    overlap = align * min(overlap_units, tile_units - 1)
    starts, extent = axis_tile_starts(length, tile, overlap, align)
    assert all(s % align == 0 for s in starts)  # offsets aligned to the output stride
    assert list(starts) == sorted(set(starts))
    assert starts[-1] + extent >= length  # the last tile reaches the edge...
    assert starts[-1] + extent - length < align or len(starts) == 1  # ...overhanging less than one stride
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # neighbours still overlap
    assert extent <= tile


def test_lattice_starts_worked_out_by_hand():
    # 256 px tiles, overlap 64: starts every 192 px while the tile ends inside; 0, 192, 384 end at
    # 640 < 718, so one last start, the first multiple of 8 from which 256 px reach 718: 462 -> 464
    assert axis_tile_starts(718, 256, 64, 8) == ((0, 192, 384, 464), 256)
    assert axis_tile_starts(640, 256, 64, 8) == ((0, 192, 384), 256)  # 384 + 256 ends on the edge
    assert axis_tile_starts(100, 256, 64, 8) == ((0,), 104)  # shorter than a tile: one tile, 100 -> 104


def test_small_image_gets_one_tile_of_its_size_rounded_to_the_stride():
    plan = Plan(373, 485, TileGrid(512, 64, 8))
    assert (plan.row_starts, plan.col_starts) == ((0,), (0,))
    assert (plan.tile_height, plan.tile_width) == (376, 488)


def test_lattice_does_not_depend_on_block_size():
    a = Plan(5000, 3000, TileGrid(512, 64, 8), 256, 512)
    b = Plan(5000, 3000, TileGrid(512, 64, 8), 256, 2048)
    assert (a.row_starts, a.col_starts) == (b.row_starts, b.col_starts)
    tiles_a = {t for blk in a.blocks() for t in blk.tiles}
    tiles_b = {t for blk in b.blocks() for t in blk.tiles}
    assert tiles_a == tiles_b
    assert b.overlap_cost_factor < a.overlap_cost_factor  # wider strips recompute fewer tiles on their edges


def test_stack_plans_have_one_set_of_blocks_per_plane():
    plan = Plan(100, 100, TileGrid(64, 16, 8), 32, 64, depth=3)
    assert plan.block_count == 3 * 4 * 2  # 4 bands of 32 rows, 2 strips of 64 columns
    assert {b.plane for b in plan.blocks()} == {0, 1, 2}
    assert {u.plane for u in plan.units()} == {0, 1, 2}


@pytest.mark.parametrize("tile,overlap,stride", [(500, 64, 8), (512, 60, 8), (512, 512, 8), (0, 0, 8)])
def test_bad_tiling_is_a_clear_error(tile, overlap, stride):
    with pytest.raises(TilepipeError):
        TileGrid(tile, overlap, stride)


def test_block_size_must_hold_whole_chunks():
    with pytest.raises(TilepipeError, match="multiple of --chunk-size"):
        Plan(100, 100, TileGrid(64, 16, 8), 48, 64)
