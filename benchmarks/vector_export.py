"""Time and peak memory of ``tilepipe export --to geoparquet`` against polygonising the whole mask
in memory (``rasterio.features.shapes`` on the full array, then GeoPandas' ``to_parquet``).

The mask is a field map, not noise: a jittered-grid Voronoi tessellation (one cell per
``--cell`` px square, drawn in 4 px steps) whose cells take one of 8 classes, so neighbouring cells of one class merge
into larger regions crossing chunk and block edges, with a no-data margin along the left edge.
Every pixel is a function of its coordinates, so a larger mask has the same density of regions:
``--sizes 16384 32768`` checks that the export's peak memory stays flat as the area grows 4x.
Stores are built block by block as a run writes them, and cached under ``--workdir``.

Each measurement runs in a fresh child process, whose peak RSS is Linux's ``VmHWM`` (a child's
``ru_maxrss`` starts at its parent's); ``baseline_mb`` is the child's peak after its imports,
before any pixel is read.

    python benchmarks/vector_export.py                       # 16384 and 32768 (whole array at 16384 only)
    python benchmarks/vector_export.py --sizes 4096 --whole-up-to 4096
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import DEFAULT_WORKDIR, announce, maxrss_bytes, proc_status_bytes

CLASSES = 8
RECIPE = "voronoi-v2"
COARSE = 4
"""The tessellation is computed on a grid this much coarser and repeated: 16x cheaper to build,
region boundaries in 4 px steps."""


def _hash(i: np.ndarray, j: np.ndarray, salt: int) -> np.ndarray:
    """A deterministic pseudo-random uint32 per integer pair (a cell's seed offsets and class)."""
    h = (i.astype(np.uint64) * np.uint64(73856093)) ^ (j.astype(np.uint64) * np.uint64(19349663)) ^ np.uint64(salt)
    h = (h ^ (h >> np.uint64(13))) * np.uint64(0x5BD1E995)
    return ((h ^ (h >> np.uint64(15))) & np.uint64(0xFFFFFFFF)).astype(np.uint64)


def field_map(row: int, col: int, height: int, width: int, cell: int) -> np.ndarray:
    """The mask's pixels in a window (``row``, ``col``, ``height``, ``width`` multiples of
    COARSE): the class of the nearest cell seed (3 x 3 cells searched), on the coarse grid."""
    rows = np.arange(row // COARSE, (row + height) // COARSE)[:, None] * COARSE
    cols = np.arange(col // COARSE, (col + width) // COARSE)[None, :] * COARSE
    ci, cj = rows // cell, cols // cell
    best = np.full((rows.size, cols.size), np.inf)
    label = np.zeros((rows.size, cols.size), np.uint8)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            i, j = ci + di, cj + dj
            sy = i * cell + _hash(i, j, 1) % cell
            sx = j * cell + _hash(i, j, 2) % cell
            d = (rows - sy.astype(np.int64)) ** 2 + (cols - sx.astype(np.int64)) ** 2
            closer = d < best
            best = np.where(closer, d, best)
            label = np.where(closer, (_hash(i, j, 3) % CLASSES).astype(np.uint8), label)
    label = label.repeat(COARSE, axis=0).repeat(COARSE, axis=1)
    label[:, : max(0, 64 - col)] = 255  # a no-data margin, as a scene's edge has
    return label


def build_store(workdir: Path, side: int, cell: int) -> str:
    """A finished store of the field map, written block by block through ``MaskStore``."""
    from pyproj import CRS

    from tilepipe.grid import TileGrid
    from tilepipe.partition import Plan
    from tilepipe.sink import MaskStore

    url = str(workdir / f"fields_{side}_{cell}.zarr")
    try:
        store = MaskStore.open(url)
        if store.is_complete and store.group.attrs.get("recipe") == RECIPE:
            return url
    except Exception:  # absent or unreadable: build it
        pass
    plan = Plan(side, side, TileGrid(512, 64, 8))
    attrs = {"crs_wkt": CRS.from_epsg(32618).to_wkt(), "transform": [10.0, 0, 500000.0, 0, -10.0, 4200000.0],
             "class_names": [f"field type {k}" for k in range(CLASSES)], "recipe": RECIPE}
    store = MaskStore.create(url, plan, CLASSES, False, attrs=attrs, run_id="bench")
    for block in plan.blocks():
        c = block.core
        store.write_block(block, field_map(c.row, c.col, c.height, c.width, cell))
    store.mark_complete()
    return url


def peak_rss() -> int:
    return proc_status_bytes("VmHWM") or maxrss_bytes()


def child_tilepipe(url: str, out: str) -> dict:
    from tilepipe.exporters import export
    import tilepipe.exporters.vector  # noqa: F401 - imported before the baseline

    baseline = peak_rss()
    start = time.perf_counter()
    export(url, "geoparquet", out)
    return {"seconds": time.perf_counter() - start, "baseline": baseline}


def child_whole(url: str, out: str) -> dict:
    """What a user without tilepipe's exporter writes: the whole mask, shapes, a GeoDataFrame."""
    import geopandas as gpd
    import shapely
    import zarr
    from affine import Affine
    from rasterio import features

    baseline = peak_rss()
    start = time.perf_counter()
    group = zarr.open_group(url, mode="r")
    mask = group["mask"][...]
    found = [(shapely.geometry.shape(g), int(v)) for g, v in
             features.shapes(mask, mask=mask != 255, connectivity=4, transform=Affine(*group.attrs["transform"]))]
    frame = gpd.GeoDataFrame({"class_id": [v for _, v in found]}, geometry=[g for g, _ in found],
                             crs=group.attrs["crs_wkt"])
    frame.to_parquet(out)
    return {"seconds": time.perf_counter() - start, "baseline": baseline}


def measure(mode: str, url: str, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, url, str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16384, 32768], help="mask sides in px")
    parser.add_argument("--whole-up-to", type=int, default=16384, help="largest side polygonised whole in memory")
    parser.add_argument("--cell", type=int, default=96, help="Voronoi cell side in px (region density)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, url, out = args.child
        result = {"tilepipe": child_tilepipe, "whole": child_whole}[mode](url, out)
        import pyarrow.parquet as pq

        print(json.dumps({**result, "peak": peak_rss(), "features": pq.read_metadata(out).num_rows}))
        return
    announce()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for side in args.sizes:
        start = time.perf_counter()
        url = build_store(args.workdir, side, args.cell)
        print(f"store {side}^2 ready in {time.perf_counter() - start:.0f} s", flush=True)
        for mode in ("tilepipe", "whole") if side <= args.whole_up_to else ("tilepipe",):
            r = measure(mode, url, args.workdir / f"fields_{side}_{mode}.parquet")
            rows.append({"side": side, "mode": mode, "seconds": round(r["seconds"], 1),
                         "peak_mb": round(r["peak"] / 1e6), "baseline_mb": round(r["baseline"] / 1e6),
                         "features": r["features"]})
            print(json.dumps(rows[-1]), flush=True)
    print("| side | approach | features | time s | peak RSS MB | RSS after imports MB |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['side']} | {r['mode']} | {r['features']:,} | {r['seconds']} | {r['peak_mb']} | {r['baseline_mb']} |")


if __name__ == "__main__":
    main()
