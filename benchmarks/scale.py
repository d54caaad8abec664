"""Issue 2's benchmark: does tilepipe's memory stay flat as the image grows, and how fast is it?

1. Builds (once, cached in ``--workdir``) a ``--size`` square RGB GeoTIFF mosaic of the shared
   real samples, and one with ``--factor`` times its area.
2. Runs the pipeline with the cheap stand-in model on both, each in its own child process so each
   peak RSS is that run's own, and checks the targets (issue 11): peak RSS within 1.2x between the
   two sizes, below 2 GB, and tiles computed within 1.05x of the distinct lattice tiles.
3. Runs the real DeepLabV3-ResNet101 (random weights: the cost is the same) on a ``--real-crop``
   square crop, for megapixels/s of the real network on this machine.

The stand-in isolates what scales with the image (reading, stitching, writing, bookkeeping); the
network's own memory does not depend on image size, only on tile and batch size.

    python benchmarks/scale.py                      # the full run: 12,000^2 then 24,000^2
    python benchmarks/scale.py --size 3000 --real-crop 512 --json out.json   # a quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_WORKDIR, announce, build_crop, build_mosaic, built_path, run_child  # noqa: E402


RSS_RATIO_TARGET = 1.2
LATTICE_FACTOR_TARGET = 1.05
RSS_LIMIT_BYTES = 2 * 10**9  # "below 2 GB", in decimal gigabytes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=12000, help="side of the base image in pixels (default 12000)")
    p.add_argument("--factor", type=float, default=4.0, help="area multiplier of the large image (default 4)")
    p.add_argument("--real-crop", type=int, default=2048, help="side of the real-model crop; 0 skips it (default 2048)")
    p.add_argument("--workers", default="auto", help="pipeline workers (default auto)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"cache for images and stores (default {DEFAULT_WORKDIR})")
    p.add_argument("--skip-build", action="store_true", help="use the cached images; fail if they are missing")
    p.add_argument("--json", type=Path, help="also write the final JSON here")
    args = p.parse_args(argv)
    if args.real_crop > args.size:
        p.error(f"--real-crop {args.real_crop} is larger than --size {args.size}")
    return args


def image(args, side: int) -> Path:
    if args.skip_build:
        return built_path(args.workdir, side)
    t0 = time.perf_counter()
    path, built = build_mosaic(args.workdir, side)
    note = f"built in {time.perf_counter() - t0:.1f} s" if built else "cached"
    print(f"image {side} x {side}: {path} ({note}, {path.stat().st_size / 1e6:.0f} MB)", flush=True)
    return path


def measure(args, path: Path, model: str, label: str) -> dict:
    """One pipeline run in a child process. The store is deleted afterwards, to spare the disk
    (a 40,000^2 mask is gigabytes); its summary.json/.md stay beside it in the workdir."""
    store = args.workdir / f"{path.stem}_{model}.zarr"
    result = run_child(input=str(path), output=str(store), model=model, weights="none", tile_size=512,
                       overlap=64, chunk_size=512, workers=args.workers, batch_size=4, overwrite=True)
    shutil.rmtree(store, ignore_errors=True)
    print(f"{label}: {result['megapixels']:.1f} MP, {result['megapixels_per_second']:.3g} MP/s, "
          f"wall {result['wall_seconds']:.1f} s, overlap cost factor {result['overlap_cost_factor']:.3f}, "
          f"tiles computed {result['tiles_computed']} of lattice {result['lattice_tiles']} "
          f"({result['tiles_computed'] / result['lattice_tiles']:.3f}x), "
          f"{result['blocks']} blocks, peak RSS {result['peak_rss_bytes'] / 1e6:.0f} MB "
          f"(after imports {result['baseline_rss_bytes'] / 1e6:.0f} MB)", flush=True)
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    large_side = round(args.size * math.sqrt(args.factor))
    command, versions = announce()
    print(f"cpus: {os.cpu_count()}, workers: {args.workers}", flush=True)

    base = measure(args, image(args, args.size), "standin", f"standin {args.size}^2")
    print(f"device: {base['device']} ({base['device_name']}), torch threads {base['torch_threads']}")
    large = measure(args, image(args, large_side), "standin", f"standin {large_side}^2")

    ratio = large["peak_rss_bytes"] / base["peak_rss_bytes"]
    peak = max(base["peak_rss_bytes"], large["peak_rss_bytes"])
    ratio_ok, limit_ok = ratio <= RSS_RATIO_TARGET, peak < RSS_LIMIT_BYTES
    print(f"peak RSS ratio {large_side}^2 / {args.size}^2 (area x{args.factor:g}): {ratio:.3f}")
    print(f"{'PASS' if ratio_ok else 'FAIL'}: peak RSS within {RSS_RATIO_TARGET}x between the two sizes ({ratio:.3f}x)")
    print(f"{'PASS' if limit_ok else 'FAIL'}: peak RSS below 2 GB ({peak / 1e9:.2f} GB)")
    factor = max(r["tiles_computed"] / r["lattice_tiles"] for r in (base, large))
    lattice_ok = factor <= LATTICE_FACTOR_TARGET
    print(f"{'PASS' if lattice_ok else 'FAIL'}: tiles computed within {LATTICE_FACTOR_TARGET}x of the lattice ({factor:.3f}x)")

    real = None
    if args.real_crop:
        source = built_path(args.workdir, args.size)
        crop = build_crop(source, args.real_crop)
        real = measure(args, crop, "deeplabv3_resnet101", f"deeplabv3_resnet101 {args.real_crop}^2 crop")

    blob = {
        "benchmark": "scale",
        "command": command,
        "libraries": versions,
        "cpu_count": os.cpu_count(),
        "device": base["device"],
        "device_name": base["device_name"],
        "standin": {str(args.size): base, str(large_side): large},
        "rss_ratio": round(ratio, 4),
        "targets": {"rss_ratio_within_1_2x": ratio_ok, "rss_below_2gb": limit_ok,
                    "tiles_within_1_05x_of_lattice": lattice_ok},
        "deeplabv3_resnet101_crop": real,
    }
    text = json.dumps(blob, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if ratio_ok and limit_ok and lattice_ok else 1


if __name__ == "__main__":
    sys.exit(main())
