"""The host side of a GPU run, without a GPU (``throughput.py --host-only``): read and decode, cut
the tiles in the file's dtype as the engine's prefetch does on CUDA, write a uint8 mask with
``MaskStore.write_block``, on ``--workers`` threads, with no model and no blending, against the
30 MP/s the host must sustain; a single-threaded profile that splits read, decode, cut and
write; and tilepipe end to end with the stand-in on the CPU (CPU blending).
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window as RioWindow

from measure import Phase, print_tilepipe, rounded, run_kwargs, run_tilepipe
from tilepipe.grid import TileGrid, Window
from tilepipe.partition import Plan
from tilepipe.sink import NO_LABEL, MaskStore
from tilepipe.sources import SourceSpec, open_source
from tilepipe.sources.geotiff import GeoTiffSource
from tilepipe.stream import tile_pixels

HOST_TARGET_MPS = 30.0


def host_labels(pixels: np.ndarray, core_rows: slice, core_cols: slice, core_valid: np.ndarray) -> np.ndarray:
    """A stand-in mask for the write: band 1 of the core quantised to 4 classes. Noisier than a
    network's mask, so its compression (and write) cost is on the high side."""
    labels = pixels[0, core_rows, core_cols] >> 6
    labels = labels.astype(np.uint8, copy=False)
    labels[~core_valid] = NO_LABEL
    return labels


def host_block(source, plan: Plan, store: MaskStore, index, batch: int) -> dict:
    """process_block's host work on a GPU run, with tilepipe's own functions, minus the model and
    the blending: read the block plus halo, cut its tiles batch by batch in the file's dtype as the
    prefetch thread does (the engine scales them on the device; the batch is dropped here), write
    a uint8 mask with ``MaskStore.write_block``."""
    seconds = {"read": 0.0, "cut": 0.0, "mask": 0.0, "write": 0.0}
    block = plan.block(index)
    read = block.read_window
    t = time.perf_counter()
    pixels, valid = source.read(read, block.plane)
    seconds["read"] += time.perf_counter() - t
    t = time.perf_counter()
    core_rows, core_cols = block.core.relative_to(read)
    core_valid = valid[core_rows, core_cols]
    tiles = [w for w in block.tiles if valid[w.relative_to(read)].any()]
    for i in range(0, len(tiles), batch):
        tile_pixels([(pixels, valid, read, tile) for tile in tiles[i:i + batch]])
    seconds["cut"] += time.perf_counter() - t
    t = time.perf_counter()
    labels = host_labels(pixels, core_rows, core_cols, core_valid)
    seconds["mask"] += time.perf_counter() - t
    t = time.perf_counter()
    store.write_block(block, labels)
    seconds["write"] += time.perf_counter() - t
    return {"seconds": seconds, "read_pixels": read.area, "tiles": len(tiles)}


def uncompressed_copy(image: Path, rows: int) -> Path:
    """The top ``rows`` rows of ``image`` as an uncompressed tiled GeoTIFF beside it (reused):
    reading it costs what reading the deflate file costs, minus decoding."""
    path = image.with_name(f"{image.stem}_top{rows}_raw.tif")
    with rasterio.open(image) as src:
        if path.exists():
            with rasterio.open(path) as ds:
                if (ds.width, ds.height) == (src.width, rows) and ds.compression is None:
                    return path
        profile = dict(driver="GTiff", width=src.width, height=rows, count=src.count, dtype=src.dtypes[0],
                       tiled=True, blockxsize=512, blockysize=512, compress="none", crs=src.crs,
                       transform=src.transform)
        tmp = path.with_name(path.name + ".partial")
        with rasterio.open(tmp, "w", **profile) as dst:
            for row in range(0, rows, 512):
                h = min(512, rows - row)
                dst.write(src.read(window=RioWindow(0, row, src.width, h)), window=RioWindow(0, row, src.width, h))
    os.replace(tmp, path)
    return path


def host_profile(image: Path, plan: Plan, store: MaskStore, batch: int, blocks: int) -> dict:
    """One thread, the first ``blocks`` blocks (row-major), each stage timed alone; decoding is
    split from reading by reading the same windows from an uncompressed copy. Both files' bytes are
    read once untimed first, so both come from the page cache: disk speed is not part of this figure.

    Also timed, outside the total: a plain copy of each cut batch, which stands in for the copy
    into pinned memory that ``Engine.upload`` makes on CUDA (not measurable without a GPU)."""
    indices = [b.index for b in plan.blocks()][:blocks]
    rows = min(plan.height, max(plan.block(i).read_window.row_stop for i in indices))
    raw_path = uncompressed_copy(image, rows)
    for path in (image, raw_path):
        warm_page_cache(path)
    # fresh sources (not open_source's cached ones): new GDAL handles, so no block decoded earlier
    # in this process is served from GDAL's block cache; within the loop, a halo that the previous
    # block already decoded is served from it, as in a run
    deflate, raw = GeoTiffSource(SourceSpec(path=str(image))), GeoTiffSource(SourceSpec(path=str(raw_path)))
    totals = dict.fromkeys(("read_uncompressed", "read_deflate", "cut", "mask", "write", "batch_copy"), 0.0)
    pixels_read = 0
    for i in indices:
        block = plan.block(i)
        window = block.read_window
        pixels_read += window.intersection(Window(0, 0, plan.height, plan.width)).area
        t = time.perf_counter()
        raw.read(window)
        totals["read_uncompressed"] += time.perf_counter() - t
        r = host_block(deflate, plan, store, i, batch)
        for k in ("cut", "mask", "write"):
            totals[k] += r["seconds"][k]
        totals["read_deflate"] += r["seconds"]["read"]
        pixels, valid = deflate.read(window)  # again, for the copy (GDAL's block cache serves it)
        tiles = [w for w in block.tiles if valid[w.relative_to(window)].any()]
        for j in range(0, len(tiles), batch):
            images, _ = tile_pixels([(pixels, valid, window, tile) for tile in tiles[j:j + batch]])
            buffer = np.empty_like(images)
            t = time.perf_counter()
            np.copyto(buffer, images)
            totals["batch_copy"] += time.perf_counter() - t
    core_mp = sum(plan.block(i).core.area for i in indices) / 1e6
    stages = {
        "read (I/O from page cache + GDAL, no decode)": totals["read_uncompressed"],
        "decode (deflate + predictor)": max(totals["read_deflate"] - totals["read_uncompressed"], 0.0),
        "cut (tile_pixels, in the file's dtype)": totals["cut"],
        "mask (stand-in labels)": totals["mask"],
        "write (MaskStore.write_block: zstd + file)": totals["write"],
    }
    total = sum(stages.values())
    return {"blocks": len(indices), "core_megapixels": rounded(core_mp, 6), "read_megapixels": rounded(pixels_read / 1e6, 6),
            "stage_seconds": {k: rounded(v) for k, v in stages.items()},
            "stage_share": {k: rounded(v / total) for k, v in stages.items()},
            "stage_megapixels_per_second_one_thread": {k: rounded(core_mp / v, 4) if v else None for k, v in stages.items()},
            "single_thread_megapixels_per_second": rounded(core_mp / total, 4),
            "dominant": max(stages, key=stages.get),
            "batch_copy_seconds_outside_total": rounded(totals["batch_copy"]),
            "uncompressed_copy": str(raw_path)}


def warm_page_cache(path: Path) -> None:
    """Read the file's bytes once, so the timed reads come from the page cache (disk speed is not
    what the host-side figure is about; a cold read from a slow disk adds to it)."""
    with open(path, "rb") as f:
        while f.read(1 << 23):
            pass


def host_only(args, image: Path) -> dict:
    stride = args.output_stride or 8  # the real model's lattice, as on the GPU run this stands for
    source = open_source(SourceSpec(path=str(image)))
    plan = Plan(source.height, source.width, TileGrid(args.tile_size, args.overlap, stride), args.chunk_size,
                args.block_size)
    batch = args.batch_size if args.batch_size != "auto" else 4
    print(f"host side of a GPU run: {plan.block_count} blocks of {args.block_size} px, tiles {plan.tile_height} px "
          f"overlap {args.overlap} (stride {stride} lattice), overlap cost factor {plan.overlap_cost_factor:.3f}, "
          f"scaling {source.scaling.method}, {args.workers} threads, batches of {batch} tiles", flush=True)

    store_url = args.workdir / "throughput_hostonly.zarr"
    warm_page_cache(image)

    def timed() -> dict:
        store = MaskStore.create(str(store_url), plan, 21, False, attrs={"nodata": NO_LABEL})
        with Phase(torch.device("cpu")) as phase, ThreadPoolExecutor(args.workers, thread_name_prefix="host") as pool:
            reports = list(pool.map(lambda b: host_block(source, plan, store, b.index, batch), plan.blocks()))
        shutil.rmtree(store_url, ignore_errors=True)
        busy = {k: rounded(sum(r["seconds"][k] for r in reports)) for k in ("read", "cut", "mask", "write")}
        return {"seconds": rounded(phase.seconds), "megapixels_per_second": rounded(plan.megapixels / phase.seconds, 6),
                "busy_seconds": busy, **phase.memory(), "_line": phase.memory_line()}

    runs = [timed() for _ in range(args.repeat)]
    median = sorted(runs, key=lambda r: r["megapixels_per_second"])[(len(runs) - 1) // 2]
    mps = median["megapixels_per_second"]
    ok = mps >= HOST_TARGET_MPS
    each = ", ".join(f"{r['megapixels_per_second']:.3g}" for r in runs)
    print(f"host-only (a GPU run's host work: read, cut in the file's dtype, write): {mps:.3g} image MP/s, median of "
          f"{len(runs)} (each: {each}; {plan.megapixels:.2f} MP, {args.workers} threads); busy s of the median run: "
          + ", ".join(f"{k} {v:.2f}" for k, v in median["busy_seconds"].items()) + f"; {median['_line']}")
    print(f"{'PASS' if ok else 'FAIL'}: host side {mps:.3g} MP/s vs target {HOST_TARGET_MPS:g} MP/s "
          f"(on {os.cpu_count()} CPUs)", flush=True)
    for r in runs:
        r.pop("_line")

    store = MaskStore.create(str(store_url), plan, 21, False, attrs={"nodata": NO_LABEL})
    profile = host_profile(image, plan, store, batch, args.profile_blocks)
    shutil.rmtree(store_url, ignore_errors=True)
    print(f"profile, one thread, {profile['blocks']} blocks ({profile['core_megapixels']:.2f} MP core, "
          f"{profile['read_megapixels']:.2f} MP read): {profile['single_thread_megapixels_per_second']:.3g} MP/s")
    for k, v in profile["stage_seconds"].items():
        print(f"  {k}: {v:.3f} s ({profile['stage_share'][k]:.0%}; "
              f"{profile['stage_megapixels_per_second_one_thread'][k] or 0:.4g} MP/s alone)")
    print(f"  dominant: {profile['dominant']}")
    print(f"  not in the total: a copy of each cut batch (stands in for the pinned-memory copy on CUDA): "
          f"{profile['batch_copy_seconds_outside_total']:.3f} s", flush=True)

    cpu_kwargs = run_kwargs(args, model="standin", weights="none", device="cpu", precision="fp32", compile=False,
                            output_stride=None)
    full = run_tilepipe(image, args.workdir / "throughput_hostonly_cpu_standin.zarr", cpu_kwargs)
    print_tilepipe("full CPU pipeline (stand-in model, CPU gaussian blending, tilepipe.run)", full)
    return {
        "host_only": {"megapixels": rounded(plan.megapixels, 6), "megapixels_per_second": rounded(mps, 6),
                      "statistic": f"median of {len(runs)} runs", "runs": runs, "threads": args.workers,
                      "target_mps": HOST_TARGET_MPS, "pass": ok, "overlap_cost_factor": rounded(plan.overlap_cost_factor),
                      "output_stride": stride, "batch": batch},
        "profile": profile,
        "full_cpu_pipeline_standin": full,
    }
