"""Issue 20's benchmark: many small DICOM series as one batch against one run per series.

``--series`` synthetic CT series (``tilepipe.testing.write_ct_series``: ``--slices`` slices of
``--size`` px, one folder per series under one study folder, written once into ``--workdir``)
are segmented with the stand-in model on ``--cluster local:N``:

* as one batch: ``tilepipe run STUDY --all-series -o OUT --cluster local:N``, one process;
* as separate runs: ``tilepipe run STUDY/sNNN -o OUT/sNNN.zarr --cluster local:N``, a process
  (and so a cluster start and a model load per worker) each, one after another, as a shell loop
  over the series would. With ``--separate M`` below ``--series``, only the first M run and the
  total for all series is their mean per run times the series count, printed as extrapolated.

Both are timed from outside, as a user waits for them (process start, imports and cluster start
included), and every store of both is checked complete.

    python benchmarks/batch.py                             # 200 series, 200 separate runs
    python benchmarks/batch.py --separate 10               # on a small machine: 10, extrapolated
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tilepipe.testing import write_ct_series  # noqa: E402

DEFAULT_WORKDIR = Path(__file__).resolve().parent / "out" / "batch"
RUN_FLAGS = ["--model", "standin", "--weights", "none", "-q"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int, default=200, help="series in the study (default 200)")
    p.add_argument("--slices", type=int, default=20, help="slices per series (default 20)")
    p.add_argument("--size", type=int, default=256, help="slice side in pixels (default 256)")
    p.add_argument("--cluster", default="local:2", help="default local:2")
    p.add_argument("--separate", type=int, help="separate runs to time (default: all series)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"default {DEFAULT_WORKDIR}")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p.parse_args(argv)


def study(args) -> Path:
    """The study folder, written once per shape (a marker file says it is whole)."""
    folder = args.workdir / f"study-{args.series}x{args.slices}x{args.size}"
    if not (folder / "complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        for k in range(args.series):
            write_ct_series(folder / f"s{k:03d}", slices=args.slices, size=args.size, description=f"series {k:03d}")
        (folder / "complete").write_text("")
    return folder


def timed(command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env=env)
    return time.perf_counter() - start


def complete_stores(folder: Path) -> int:
    import zarr

    return sum(bool(zarr.open_group(str(s), mode="r").attrs["tilepipe"].get("complete")) for s in folder.glob("*.zarr"))


def main(argv=None) -> dict:
    args = parse_args(argv)
    source = study(args)
    series = sorted(p for p in source.iterdir() if p.is_dir())
    tilepipe = [sys.executable, "-m", "tilepipe", "run"]
    out = args.workdir / "runs"
    shutil.rmtree(out, ignore_errors=True)

    batch_seconds = timed([*tilepipe, str(source), "--all-series", "-o", str(out / "batch"),
                           "--cluster", args.cluster, *RUN_FLAGS])
    assert complete_stores(out / "batch") == len(series)
    print(f"batch: {len(series)} series in {batch_seconds:.1f} s ({batch_seconds / len(series):.2f} s per series)")

    separate = series[: args.separate or len(series)]
    seconds = [timed([*tilepipe, str(s), "-o", str(out / "separate" / f"{s.name}.zarr"), "--cluster", args.cluster,
                      *RUN_FLAGS]) for s in separate]
    assert complete_stores(out / "separate") == len(separate)
    per_run = sum(seconds) / len(seconds)
    separate_total = per_run * len(series)
    extrapolated = len(separate) < len(series)
    how = f"{len(separate)} timed, {per_run:.1f} s each on average, times {len(series)}" if extrapolated else "measured"
    print(f"separate: {len(series)} runs in {separate_total:.1f} s ({how})")
    print(f"ratio: the batch is {separate_total / batch_seconds:.1f}x faster")
    figures = {"series": len(series), "slices": args.slices, "size": args.size, "cluster": args.cluster,
               "batch_seconds": round(batch_seconds, 2), "separate_runs_timed": len(separate),
               "separate_seconds_each": [round(s, 2) for s in seconds],
               "separate_seconds_total": round(separate_total, 2), "separate_extrapolated": extrapolated,
               "speedup": round(separate_total / batch_seconds, 2), "load_average": os.getloadavg()}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
