"""DICOM frame reads: frames/s of pydicom's ``pixel_array(path, index=i)`` (a header parse per frame,
how tilepipe read frames before issue 11) against tilepipe's frame reader (one parse per file).

    python benchmarks/dicom_frame_reads.py                      # the real files, slides of 300 and 3000 frames
    python benchmarks/dicom_frame_reads.py --slide-frames       # the real files only

Both ways decode the same frames, spread evenly through each file, in one process one after the
other, so that load from other work hits both alike; the reader's time includes building it
(parsing the header and locating every frame). Inputs: the 176-frame Enhanced MR in tests/data, the CMU-1
slide sample's level 0 (30 JPEG frames), and larger slide levels made from those 30 frames repeated
(``--slide-frames``, no Basic Offset Table, like the sample): there pydicom finds frame ``i`` by
walking the fragment items before it, so its cost per frame grows with the level; the reader walks
them once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import pixel_array

from _common import DEFAULT_WORKDIR, announce
from tilepipe.sources.dicom_frames import READERS

SHARED_DICOM = Path(__file__).resolve().parents[1] / "tests" / "data" / "dicom"
ENHANCED = SHARED_DICOM / "enhanced" / "philips_mprage.dcm"
SLIDE_LEVEL_0 = SHARED_DICOM / "wsi_cmu1" / "level-0-frames-0-30.dcm"


def larger_slide(workdir: Path, frames: int) -> Path:
    """Level 0 of the slide sample with its frames repeated to ``frames``, built once."""
    path = workdir / f"slide_level0_{frames}frames.dcm"
    if path.exists():
        return path
    ds = pydicom.dcmread(SLIDE_LEVEL_0)
    tiles = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    ds.PixelData = encapsulate([tiles[k % len(tiles)] for k in range(frames)], has_bot=False)
    ds.NumberOfFrames = frames
    ds.TotalPixelMatrixRows = -(-frames // 5) * ds.Rows  # 5 frames across, as in the sample
    workdir.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def timed(read, indices) -> tuple[float, list[np.ndarray]]:
    start = time.perf_counter()
    frames = [read(i) for i in indices]
    return time.perf_counter() - start, frames


def compare(path: Path, sample: int) -> dict:
    count = int(pydicom.dcmread(path, stop_before_pixels=True).get("NumberOfFrames") or 1)
    indices = sorted({round(i) for i in np.linspace(0, count - 1, min(sample, count))})
    parse_each, expected = timed(lambda i: pixel_array(path, index=i), indices)
    READERS.clear()
    start = time.perf_counter()
    reader = READERS.get(str(path))
    build = time.perf_counter() - start
    reading, frames = timed(reader.frame, indices)
    assert all(np.array_equal(a, b) for a, b in zip(frames, expected)), f"{path}: the two ways differ"
    return {"file": path.name, "frames_in_file": count, "frames_read": len(indices),
            "parse_per_frame_fps": round(len(indices) / parse_each, 2), "reader_build_seconds": round(build, 3),
            "reader_fps": round(len(indices) / reading, 2), "speedup": round(parse_each / reading, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide-frames", type=int, nargs="*", default=[300, 3000],
                        help="frame counts of the larger slide levels (none: the real files only)")
    parser.add_argument("--sample", type=int, default=20, help="frames read from each file, spread evenly")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    # the slide's frames say RGB while their JPEG marker says YCbCr: pydicom warns on every frame, and decodes them right
    warnings.filterwarnings("ignore", message=r".*codestream contains a JFIF APP marker.*")
    announce()
    print(f"cpus: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    paths = [p for p in (ENHANCED, SLIDE_LEVEL_0) if p.exists()]
    if SLIDE_LEVEL_0.exists():
        paths += [larger_slide(args.workdir, n) for n in args.slide_frames]
    results = [compare(p, args.sample) for p in paths]
    print(f"{'file':<30} {'frames':>6} {'read':>5} {'parse per frame fr/s':>21} {'reader build s':>15} "
          f"{'reader fr/s':>12} {'speed-up':>9}")
    for r in results:
        print(f"{r['file']:<30} {r['frames_in_file']:>6} {r['frames_read']:>5} {r['parse_per_frame_fps']:>21.1f} "
              f"{r['reader_build_seconds']:>15.3f} {r['reader_fps']:>12.1f} {r['speedup']:>8.1f}x")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
