"""Build the label pyramid of ever larger masks: seconds and tracemalloc peak per size.

The masks are synthetic (class stripes with a no-data corner), written chunk by chunk into a
tilepipe-shaped store, so only the pyramid builder is measured. The peak should stay flat while the
mask grows; the script prints one JSON object with a row per size.

    python benchmarks/pyramid.py                      # 4,096^2, 16,384^2 and 32,768^2 masks, 512 px chunks
    python benchmarks/pyramid.py --sizes 2048 8192    # quicker
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import zarr

from tilepipe.pyramid import build_pyramid
from tilepipe.sink import NO_LABEL, MaskStore


def make_store(path: Path, side: int, chunk: int) -> MaskStore:
    group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes={"tilepipe": {"complete": False}})
    mask = group.create_array("mask", shape=(side, side), chunks=(chunk, chunk), dtype="uint8",
                              fill_value=NO_LABEL, dimension_names=["y", "x"])
    group.create_array("blocks", shape=(1,), dtype="uint8", fill_value=0)
    for row in range(0, side, chunk):
        yy = np.arange(row, min(row + chunk, side))[:, None]
        xx = np.arange(side)[None, :]
        labels = (((xx + yy) // 37 + (xx // 101)) % 5).astype(np.uint8)
        labels[(yy > side * 0.8) & (xx < side * 0.2)] = NO_LABEL
        mask[row:row + len(yy)] = labels
    return MaskStore.open(str(path), mode="r+")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 32768])
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for side in args.sizes:
        store = make_store(args.workdir / f"pyramid_{side}.zarr", side, args.chunk)
        start = time.perf_counter()
        levels = build_pyramid(store)
        seconds = time.perf_counter() - start
        tracemalloc.start()  # a second build, traced (tracing slows it: not timed)
        build_pyramid(store)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append({"side": side, "levels": len(levels), "seconds": round(seconds, 2),
                     "megapixels_per_second": round(side * side / 1e6 / seconds, 1),
                     "peak_mb": round(peak / 2**20, 2),
                     "one_chunk_row_mb": round(args.chunk * side / 2**20, 2)})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"chunk": args.chunk, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
