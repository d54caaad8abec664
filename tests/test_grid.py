"""Property tests of the tile lattice and the block split (pure geometry)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilepipe.errors import TilepipeError
from tilepipe.grid import Plan, TileGrid, Window, axis_tile_starts


@st.composite
def plans(draw):
    stride_unit = draw(st.sampled_from([1, 8, 16]))
    tile = stride_unit * draw(st.integers(2, 12))
    overlap = stride_unit * draw(st.integers(0, tile // stride_unit - 1))
    chunk = draw(st.sampled_from([8, 16, 32, 64]))
    block = chunk * draw(st.integers(1, 4))
    height, width = draw(st.integers(1, 200)), draw(st.integers(1, 200))
    return Plan(height, width, TileGrid(tile, overlap, stride_unit), chunk, block)


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
    assert (owners == 1).all()


@settings(max_examples=100, deadline=None)
@given(plans())
def test_tiles_cover_block_and_halo_without_duplicates(plan):
    for block in plan.blocks():
        tiles = block.tiles
        assert len(set(tiles)) == len(tiles)  # no tile computed twice inside a block
        read = block.read_window
        cover = np.zeros((read.height, read.width), bool)
        for t in tiles:
            cover[t.relative_to(read)] = True
        assert cover.all()  # the tiles cover every pixel of the core plus halo
        core = block.core.relative_to(read)
        assert cover[core].all()
        # every lattice tile that touches the core is computed
        touching = {Window(r, c, plan.tile_height, plan.tile_width)
                    for r in plan.row_starts for c in plan.col_starts
                    if Window(r, c, plan.tile_height, plan.tile_width).intersection(block.core)}
        assert touching == set(tiles)


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
    assert b.overlap_cost_factor < a.overlap_cost_factor  # bigger blocks recompute fewer halo tiles


def test_stack_plans_have_one_set_of_blocks_per_plane():
    plan = Plan(100, 100, TileGrid(64, 16, 8), 32, 64, depth=3)
    assert plan.block_count == 3 * 2 * 2
    assert {b.plane for b in plan.blocks()} == {0, 1, 2}


@pytest.mark.parametrize("tile,overlap,stride", [(500, 64, 8), (512, 60, 8), (512, 512, 8), (0, 0, 8)])
def test_bad_tiling_is_a_clear_error(tile, overlap, stride):
    with pytest.raises(TilepipeError):
        TileGrid(tile, overlap, stride)


def test_block_size_must_hold_whole_chunks():
    with pytest.raises(TilepipeError, match="multiple of --chunk-size"):
        Plan(100, 100, TileGrid(64, 16, 8), 48, 64)
