"""DICOM throughput: slices (frames) per second, megapixels per second and peak RSS, on a generated CT
series and on real multi-frame and whole-slide files.

    python benchmarks/dicom_throughput.py                          # 100 and 300 slices of 512^2, real model on 3,
                                                                   # the enhanced MR and the slide sample
    python benchmarks/dicom_throughput.py --slices 20 60 --real-slices 0   # quick check of the script
    python benchmarks/dicom_throughput.py --slices --real-slices 0 # the real files only

The series is CT-like (air, body, lungs, a bone ring; int16-range values with RescaleIntercept
-1024; one file per slice, written by pydicom through :mod:`tilepipe.testing`) and is built once per
size under ``--workdir``. Each run happens in its own child process (``_common.run_child``), so its
peak RSS is its own: the stand-in model on every size, then the real DeepLabV3-ResNet101 (random
weights, same cost as trained ones) on ``--real-slices`` slices. Memory must not grow with the
number of slices: the script checks that the largest run's peak RSS is within ``--rss-ratio``
(1.3) of the smallest run's, and exits 1 when it is not.

Each of ``--files`` (by default the 176-frame Enhanced MR in tests/data and the CMU-1 slide sample) is
measured twice, each time in a fresh process so that no frame reader or frame is cached from
before: reading every frame once through the source (frames/s of the reader alone, the source's
opening timed apart), and a whole stand-in run (slices/s for a stack, frames/s of the level for a
slide, and image MP/s).
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

from _common import DEFAULT_WORKDIR, announce, build_series, run_child

MB = 1e6
SHARED_DICOM = Path(__file__).resolve().parents[1] / "tests" / "data" / "dicom"
REAL_FILES = (SHARED_DICOM / "enhanced" / "philips_mprage.dcm", SHARED_DICOM / "wsi_cmu1")


def measure(series: Path, slices: int, size: int, model: str, workers: int, workdir: Path) -> dict:
    store = workdir / f"{series.name}_{model}.zarr"
    figures = run_child(input=str(series), output=str(store), model=model, weights="none", workers=workers,
                        overwrite=True)
    shutil.rmtree(store, ignore_errors=True)
    wall = figures["wall_seconds"]
    return {"slices": slices, "size": size, "model": model, **figures,
            "slices_per_second": round(slices / wall, 3) if wall else None}


def frame_windows(source) -> list[tuple[object, int | None]]:
    """One read per frame: each plane of a stack whole, or each frame of a slide level."""
    from tilepipe.grid import Window

    if source.depth is not None:
        return [(Window(0, 0, source.height, source.width), z) for z in range(source.depth)]
    rows, cols = source.geometry()["dicom"]["frame_size"]
    return [(Window(r, c, min(rows, source.height - r), min(cols, source.width - c)), None)
            for r in range(0, source.height, rows) for c in range(0, source.width, cols)]


def read_frames_child(path: str) -> None:
    """In a fresh process: open ``path`` and read each of its frames once; print one JSON line."""
    from tilepipe.sources import SourceSpec, open_source

    start = time.perf_counter()
    source = open_source(SourceSpec(path=path))
    opened = time.perf_counter()
    windows = frame_windows(source)
    for window, plane in windows:
        source.read(window, plane)
    seconds = time.perf_counter() - opened
    pixels = sum(w.height * w.width for w, _ in windows)
    print(json.dumps({"path": path, "frames": len(windows), "open_seconds": round(opened - start, 3),
                      "read_seconds": round(seconds, 3), "frames_per_second": round(len(windows) / seconds, 2),
                      "megapixels_per_second": round(pixels / 1e6 / seconds, 3)}))


def measure_file(path: Path, workers: int, workdir: Path, repeats: int) -> dict:
    """The fastest of ``repeats`` reads and of ``repeats`` runs (the least disturbed by other load),
    each in a fresh process."""
    readings, runs = [], []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, __file__, "--read-frames", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"reading {path} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        readings.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        store = workdir / f"{path.stem}_standin.zarr"
        runs.append(run_child(input=str(path), output=str(store), model="standin", weights="none", workers=workers,
                              overwrite=True))
        shutil.rmtree(store, ignore_errors=True)
    reading = max(readings, key=lambda r: r["frames_per_second"])
    run = min(runs, key=lambda r: r["wall_seconds"])
    return {"file": str(path), "read": reading, "run": run,
            "run_frames_per_second": round(reading["frames"] / run["wall_seconds"], 2),
            "read_frames_per_second_all": [r["frames_per_second"] for r in readings],
            "run_wall_seconds_all": [r["wall_seconds"] for r in runs]}


def print_files(files: list[dict]) -> None:
    print(f"{'file':<28} {'frames':>6} {'open s':>7} {'read frames/s':>14} {'read MP/s':>10} "
          f"{'run wall s':>11} {'run frames/s':>13} {'run MP/s':>9} {'peak RSS MB':>12}")
    for f in files:
        read, run = f["read"], f["run"]
        print(f"{Path(f['file']).name:<28} {read['frames']:>6} {read['open_seconds']:>7.2f} "
              f"{read['frames_per_second']:>14.1f} {read['megapixels_per_second']:>10.2f} "
              f"{run['wall_seconds']:>11.2f} {f['run_frames_per_second']:>13.2f} {run['megapixels_per_second']:>9.3f} "
              f"{run['peak_rss_bytes'] / MB:>12.0f}")
    print("(the fastest of --repeats; a stack's frames are its slices, so run frames/s is slices/s; "
          "a slide's are the level's tiles)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="*", default=[100, 300],
                        help="generated series lengths for the stand-in runs (none: skip the series)")
    parser.add_argument("--size", type=int, default=512, help="slice side in pixels")
    parser.add_argument("--real-slices", type=int, default=3, help="slices for the real-model run (0 skips it)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rss-ratio", type=float, default=1.3, help="allowed peak RSS ratio, largest over smallest run")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--files", type=Path, nargs="*", default=[p for p in REAL_FILES if p.exists()],
                        help="real DICOM files or folders: frames/s of reading alone and of a stand-in run")
    parser.add_argument("--repeats", type=int, default=3, help="reads and runs of each real file; the fastest counts")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--read-frames", help=argparse.SUPPRESS)  # the child process of measure_file
    args = parser.parse_args(argv)
    if args.read_frames:
        read_frames_child(args.read_frames)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    announce()
    print(f"cpus: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}", flush=True)

    files = [measure_file(path, args.workers, args.workdir, args.repeats) for path in args.files]
    if files:
        print_files(files)
    runs = [measure(build_series(args.workdir, n, args.size), n, args.size, "standin", args.workers, args.workdir)
            for n in sorted(args.slices)]
    if args.real_slices:
        series = build_series(args.workdir, args.real_slices, args.size)
        runs.append(measure(series, args.real_slices, args.size, "deeplabv3_resnet101", args.workers, args.workdir))

    ratio, ok = None, True
    if runs:
        print(f"device: {runs[0]['device']} ({runs[0]['device_name']}), workers {args.workers}, "
              f"torch threads {runs[0]['torch_threads']}")
        print(f"{'model':<20} {'slices':>6} {'size':>5} {'wall s':>8} {'slices/s':>9} {'MP/s':>8} "
              f"{'after imports MB':>17} {'peak RSS MB':>12}")
        for r in runs:
            print(f"{r['model']:<20} {r['slices']:>6} {r['size']:>5} {r['wall_seconds']:>8.2f} "
                  f"{r['slices_per_second']:>9.2f} {r['megapixels_per_second']:>8.3f} "
                  f"{r['baseline_rss_bytes'] / MB:>17.0f} {r['peak_rss_bytes'] / MB:>12.0f}")
    standin = [r for r in runs if r["model"] == "standin"]
    if len(standin) > 1:
        ratio = standin[-1]["peak_rss_bytes"] / standin[0]["peak_rss_bytes"]
        ok = ratio <= args.rss_ratio
        print(f"peak RSS {standin[-1]['slices']} vs {standin[0]['slices']} slices: ratio {ratio:.3f} "
              f"(target <= {args.rss_ratio}): {'PASS' if ok else 'FAIL'}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"files": files, "runs": runs, "rss_ratio": ratio, "pass": ok}, indent=2))
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
