"""Peak memory of the no-data scan on a wide scene: windows of SCAN_COLS against full-width strips.

The scan runs when the quick statistics sample finds no valid pixel (a scene that is mostly NaN or
no-data); it reads the whole image. This builds a ``--width`` x ``--height`` 3-band float32 GeoTIFF
that is NaN but for a 10 x 10 patch near its right edge, opens it as a run would (which computes
the scaling), and prints the ``tracemalloc`` peak with the scan's windows (``SCAN_COLS`` px wide)
and with one window per full-width strip (the layout before issue 14).

    python benchmarks/scan_memory.py                  # 40,000 x 512
    python benchmarks/scan_memory.py --width 20000
"""

from __future__ import annotations

import argparse
import json
import tracemalloc
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from tilepipe.sources import SourceSpec, geotiff, open_source


def build(path: Path, width: int, height: int) -> Path:
    if not path.exists():
        with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="float32",
                           crs="EPSG:32618", transform=from_origin(500000, 4200000, 10, 10), tiled=True,
                           compress="deflate") as dst:
            for row in range(0, height, 256):
                rows = min(256, height - row)
                block = np.full((3, rows, width), np.nan, np.float32)
                if row <= height // 2 < row + rows:
                    block[:, height // 2 - row:height // 2 - row + 10, width - 1000:width - 990] = 5.0
                dst.write(block, window=rasterio.windows.Window(0, row, width, rows))
    return path


def peak_mb(path: Path, scan_cols: int) -> tuple[float, str]:
    geotiff.SCAN_COLS = scan_cols
    tracemalloc.start()
    scaling = open_source(SourceSpec(path=str(path)), run_id=f"scan-{scan_cols}").scaling  # a fresh open each
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return round(peak / 2**20, 1), scaling.sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=40000)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = build(args.workdir / f"nan_{args.width}x{args.height}.tif", args.width, args.height)
    windows = geotiff.SCAN_COLS
    rows = []
    for label, cols in (("windows", windows), ("full-width strips", args.width)):
        peak, sample = peak_mb(path, cols)
        rows.append({"scan": label, "window_cols": cols, "peak_traced_mb": peak, "sample": sample})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"width": args.width, "height": args.height, "bands": 3, "dtype": "float32", "rows": rows},
                     indent=2))


if __name__ == "__main__":
    main()
