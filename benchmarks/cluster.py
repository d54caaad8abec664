"""Issue 4's benchmark: blocks per second on 1, 2, ... workers, for in-process threads, a Dask
LocalCluster and (optionally) an existing scheduler, and how much of each block is scheduling.

Many small blocks of the cheap stand-in model make the per-block cost of scheduling visible: with
a real network a block takes seconds and the same overhead would vanish in it. For each
configuration, tilepipe runs ``--repeats`` times, each in a fresh process, on a generated mosaic
GeoTIFF (built once, cached in ``--workdir``); the fastest run is kept, and a batch of no-op tasks
is timed on the same kind of scheduler, for the floor that Dask alone puts under every task.

Nothing that imports torch is imported at module level: the run processes and LocalCluster
workers are spawned processes that re-import this script as ``__mp_main__``, and a torch import
here would move the workers' own torch import out of the block phase, where the ``tilepipe``
command has it.

    python benchmarks/cluster.py                          # 4096^2, 1 and 2 workers
    python benchmarks/cluster.py --size 2048              # a quick check
    python benchmarks/cluster.py --scheduler tcp://127.0.0.1:8786 --workers-list 1,2,4,8
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_WORKDIR, announce, build_mosaic, built_path  # noqa: E402

import dask  # noqa: E402
from toolz import identity as noop  # noqa: E402  (importable on any worker, unlike a function of this script)

import tilepipe  # noqa: E402  (lazy: no torch until tilepipe.run is looked up)
from tilepipe.report.progress import Progress  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=4096, help="side of the generated image in pixels (default 4096)")
    p.add_argument("--block-size", type=int, default=256, help="default 256")
    p.add_argument("--chunk-size", type=int, default=256, help="default 256")
    p.add_argument("--tile-size", type=int, default=128, help="default 128")
    p.add_argument("--overlap", type=int, default=32, help="default 32")
    p.add_argument("--workers-list", default="1,2", help="worker counts for threads and LocalCluster (default 1,2)")
    p.add_argument("--scheduler", help="also run on this existing dask.distributed scheduler, on all its workers")
    p.add_argument("--repeats", type=int, default=1, help="runs per configuration; the fastest is kept (default 1)")
    p.add_argument("--noop-tasks", type=int, default=500, help="no-op tasks timed per configuration (default 500)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"cache for the image and stores (default {DEFAULT_WORKDIR})")
    p.add_argument("--skip-build", action="store_true", help="use the cached image; fail if it is missing")
    p.add_argument("--json", type=Path, help="also write the final JSON here")
    args = p.parse_args(argv)
    args.workers_list = [int(n) for n in args.workers_list.split(",")]
    return args


class Clock(Progress):
    """Times when the scheduler is ready and when the first and last blocks report. tilepipe
    times starting and stopping a LocalCluster (or connecting to a scheduler) inside its block
    phase; the span from ready to last report is the block work alone, which blocks/s is computed
    from. The first report shows the workers' warm-up (importing torch, loading the model)."""

    def __init__(self):
        super().__init__(stream=io.StringIO())  # not a terminal: Progress stays silent
        self.connected_at = self.first_report_at = self.last_report_at = None

    def connected(self, dashboard):
        self.connected_at = time.perf_counter()

    def __call__(self, report):
        self.last_report_at = time.perf_counter()
        self.first_report_at = self.first_report_at or self.last_report_at


def noop_ms_per_task(tasks: int, workers: int, client=None) -> float:
    """Dask's own cost per task, in the same units as the blocks' scheduling overhead: worker-slot
    milliseconds per task, (wall x workers) / tasks, for tasks that do nothing. All tasks are
    submitted at once, as tilepipe submits its blocks; a short warm-up batch runs first, so that
    shipping the function to each worker is not counted."""
    if client is None:
        def batch(n):
            dask.compute(*[dask.delayed(noop, pure=False)(i) for i in range(n)],
                         scheduler="threads", num_workers=workers)
    else:
        def batch(n):
            client.gather([client.submit(noop, i, pure=False) for i in range(n)])
    batch(4 * workers)
    start = time.perf_counter()
    batch(tasks)
    return (time.perf_counter() - start) * workers / tasks * 1000


def scheduler_slots(client) -> int:
    """Blocks the scheduler runs at once: its GPU units when workers declare them (tilepipe then
    asks one per block), else its worker threads."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    gpus = sum(w.get("resources", {}).get("GPU", 0) for w in workers)
    return int(gpus) or sum(w["nthreads"] for w in workers)


def _run(args, image: Path, mode: str, workers: int) -> dict:
    """One tilepipe run (in the child); returns its summary and the clock's readings: the block
    phase split into startup, the blocks span and teardown."""
    scheduling = {"threads": {"workers": workers}, "local": {"cluster": f"local:{workers}"},
                  "scheduler": {"scheduler": args.scheduler}}[mode]
    store = args.workdir / f"cluster_{mode}_{workers}.zarr"
    clock, run = Clock(), tilepipe.run  # looked up first: the first lookup imports the pipeline
    called = time.perf_counter()
    summary = run(str(image), str(store), model="standin", weights="none", tile_size=args.tile_size,
                  overlap=args.overlap, chunk_size=args.chunk_size, block_size=args.block_size,
                  overwrite=True, progress=clock, **scheduling).data
    shutil.rmtree(store, ignore_errors=True)
    phase_start = called + summary["timing"]["sequential_seconds"]["setup"]
    return {
        "summary": summary,
        "startup": clock.connected_at - phase_start,
        "span": clock.last_report_at - clock.connected_at,
        "first_block": clock.first_report_at - clock.connected_at,
        "teardown": phase_start + summary["timing"]["sequential_seconds"]["blocks"] - clock.last_report_at,
    }


def _probe(args, mode: str, workers: int) -> tuple[float, list[int] | None]:
    """No-op milliseconds per task on a scheduler of the same kind as the run's (a LocalCluster
    started as tilepipe starts it), and, for worker processes, their torch thread counts."""
    if mode == "threads":
        return noop_ms_per_task(args.noop_tasks, workers), None
    import torch
    from distributed import Client, LocalCluster

    target = (LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
              if mode == "local" else nullcontext(args.scheduler))
    with target as cluster_or_address, Client(cluster_or_address, timeout="20s") as client:
        threads = sorted(set(client.run(torch.get_num_threads).values()))
        return noop_ms_per_task(args.noop_tasks, workers, client), threads


def in_child(fn, *args):
    """``fn(*args)`` in a fresh spawned process, as a ``tilepipe`` command would run. In one
    process, state would carry from one configuration to the next and make the figures depend on
    their order: the model and source caches; torch's OpenMP threads (seen on a loaded 2-core
    machine: a first 1-worker run ~10x slower than the same run after a 2-worker one); and the
    environment, where each LocalCluster's nanny leaves OMP_NUM_THREADS=1 for later processes."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def measure(args, image: Path, mode: str, workers: int) -> dict:
    """The fastest of ``--repeats`` runs (least disturbed by other load), and the probe."""
    runs = [in_child(_run, args, image, mode, workers) for _ in range(args.repeats)]
    best = min(runs, key=lambda run: run["span"])
    noop_ms, torch_threads = in_child(_probe, args, mode, workers)

    s, span = best["summary"], best["span"]
    sequential, busy = s["timing"]["sequential_seconds"], s["timing"]["stage_busy_seconds"]
    blocks, busy_total = s["plan"]["blocks_run"], sum(busy.values())
    r = {
        "mode": mode,
        "workers": workers,
        "blocks": blocks,
        "block_phase_seconds": sequential["blocks"],
        "startup_seconds": round(best["startup"], 4),
        "teardown_seconds": round(best["teardown"], 4),
        "blocks_seconds": round(span, 4),
        "blocks_seconds_all_repeats": [round(run["span"], 4) for run in runs],
        "first_block_seconds": round(best["first_block"], 4),
        "blocks_per_second": round(blocks / span, 3),
        "busy_seconds": round(busy_total, 4),
        "stage_busy_seconds": busy,
        "overhead_ms_per_block": round((span * workers - busy_total) / blocks * 1000, 3),
        "noop_ms_per_task": round(noop_ms, 3),
        "torch_threads_per_process": torch_threads or [s["engine"]["torch_threads"]],
        "setup_seconds": sequential["setup"],
        "wall_seconds": s["timing"]["wall_seconds"],
        "device": s["engine"]["device"],
        "device_name": s["engine"]["device_name"],
    }
    print(f"{mode:9} x{workers}: {blocks} blocks in {span:.2f} s = {r['blocks_per_second']:.1f} blocks/s "
          f"(first block after {r['first_block_seconds']:.2f} s); busy {busy_total:.2f} s; overhead "
          f"{r['overhead_ms_per_block']:.1f} ms/block (no-op {r['noop_ms_per_task']:.2f} ms/task); torch threads "
          f"{'/'.join(map(str, r['torch_threads_per_process']))}; block phase {sequential['blocks']:.2f} s = "
          f"startup {r['startup_seconds']:.2f} + blocks + teardown {r['teardown_seconds']:.2f}", flush=True)
    return r


def main(argv=None) -> int:
    args = parse_args(argv)
    command, versions = announce()
    threading_env = {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_", "MKL_"))}
    print(f"cpus: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}, "
          f"threading environment: {threading_env or 'none set'}", flush=True)

    if args.skip_build:
        image = built_path(args.workdir, args.size)
    else:
        t0 = time.perf_counter()
        image, built = build_mosaic(args.workdir, args.size)
        print(f"image {args.size} x {args.size}: {image} ({f'built in {time.perf_counter() - t0:.1f} s' if built else 'cached'})")
    print(f"plan: tile {args.tile_size}, overlap {args.overlap}, block {args.block_size}, chunk {args.chunk_size}, "
          f"stand-in model; fastest of {args.repeats} run(s); overhead = (blocks wall x workers - busy) / blocks",
          flush=True)

    runs = []
    for workers in args.workers_list:
        runs += [measure(args, image, "threads", workers), measure(args, image, "local", workers)]
    if args.scheduler:
        from distributed import Client

        with Client(args.scheduler, timeout="20s") as client:
            slots = scheduler_slots(client)
        print(f"scheduler {args.scheduler}: {slots} block slots")
        runs.append(measure(args, image, "scheduler", slots))
    print(f"device: {runs[0]['device']} ({runs[0]['device_name']}); load average at end: {os.getloadavg()[0]:.2f}")

    blob = {
        "benchmark": "cluster",
        "command": command,
        "libraries": versions,
        "cpu_count": os.cpu_count(),
        "threading_environment": threading_env,
        "load_average": os.getloadavg()[0],
        "device": runs[0]["device"],
        "device_name": runs[0]["device_name"],
        "image": {"path": str(image), "side": args.size},
        "plan": {"tile_size": args.tile_size, "overlap": args.overlap, "block_size": args.block_size,
                 "chunk_size": args.chunk_size, "model": "standin"},
        "repeats": args.repeats,
        "noop_tasks": args.noop_tasks,
        "runs": runs,
    }
    text = json.dumps(blob, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
