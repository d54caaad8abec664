"""What ``--resume``'s two checks cost: identifying the input's content, and finding finished blocks
whose chunks are missing with one listing of the store.

    python benchmarks/resume_checks.py                       # a 1 GiB file, a store of 16,384 mask chunks
    python benchmarks/resume_checks.py --file-mb 64 --side 2048   # quick check of the script

1. Writes a ``--file-mb`` MiB file of random bytes and times :func:`file_identity` on it (the
   median of 5; the file was just written, so it is in the page cache: a cold read adds the 16
   seeks of its sampled ranges).
2. Makes a store of ``--side`` x ``--side`` px in 64 px chunks (every block written, through
   :meth:`MaskStore.write_block`), deletes one chunk, and times
   :meth:`MaskStore.blocks_missing_chunks` (the median of 5), which must find exactly that block.

Prints one JSON line. Files go under ``--workdir`` (default ``benchmarks/out/resume_checks``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from tilepipe.grid import TileGrid
from tilepipe.partition import Plan
from tilepipe.sink import MaskStore
from tilepipe.sources.identity import file_identity

CHUNK = 64


def median_seconds(call, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def identity_cost(workdir: Path, megabytes: int) -> dict:
    path = workdir / "input.bin"
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        for _ in range(megabytes):
            f.write(rng.bytes(2**20))
    return {"file_mib": megabytes, "identity_ms": round(1e3 * median_seconds(lambda: file_identity(str(path))), 2)}


def listing_cost(workdir: Path, side: int) -> dict:
    url = str(workdir / "store.zarr")
    plan = Plan(height=side, width=side, grid=TileGrid(tile_size=128, overlap=16, output_stride=8),
                chunk_size=CHUNK, block_size=max(side, CHUNK))
    store = MaskStore.create(url, plan, num_classes=2, probabilities=False, attrs={}, run_id="bench")
    for block in plan.blocks():
        store.write_block(block, np.zeros((block.core.height, block.core.width), np.uint8))
    chunks = sum(1 for _ in (Path(url) / "mask" / "c").rglob("*") if _.is_file())
    (Path(url) / "mask" / "c" / "3" / "5").unlink()
    found = store.blocks_missing_chunks(plan)
    assert [plan.block(i).core.row // CHUNK for i in found] == [3], found
    seconds = median_seconds(lambda: store.blocks_missing_chunks(plan))
    return {"mask_chunks": chunks, "blocks": plan.block_count, "missing_chunk_check_ms": round(1e3 * seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file-mb", type=int, default=1024)
    parser.add_argument("--side", type=int, default=8192)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "out" / "resume_checks")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    try:
        print(json.dumps({**identity_cost(args.workdir, args.file_mb), **listing_cost(args.workdir, args.side)}))
    finally:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
