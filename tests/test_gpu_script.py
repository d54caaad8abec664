"""benchmarks/gpu.sh, the one script a GPU machine runs, end to end on the CPU (--cpu-smoke): a
tiny mosaic, the stand-in model, both output strides, every baseline. It must stay runnable so that
no GPU time is spent finding out that it is not. Speed figures are not checked (this is a test);
what the run must have processed is: the whole mosaic, on the lattice worked out by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"


def test_gpu_script_cpu_smoke_runs_every_part(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "WORKDIR": str(tmp_path / "work")}
    proc = subprocess.run(["bash", str(SCRIPT), "--cpu-smoke", str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "skipped" in (out / "cuda_tests.txt").read_text()  # collected, and skipped without a device
    result = json.loads((out / "throughput.json").read_text())
    assert result["mode"] == "compare-strides" and result["settings"]["precision"] == "bf16"
    for stride in (8, 16):
        r = result[f"output_stride_{stride}"]
        assert r["engine"]["precision"] == "bf16"
        # the 384 px mosaic, 128 px tiles overlapping 16 (step 112): starts 0, 112, 224 and, snapped
        # to reach 384, 256 on each axis, so 4 x 4 lattice tiles over 0.147456 MP
        assert r["tilepipe"]["megapixels"] == pytest.approx(384 * 384 / 1e6)
        assert r["tilepipe"]["lattice_tiles"] == 16
        for part in ("ceiling", "tilepipe", "naive", "monai"):
            assert r[part]["megapixels_per_second"] if part != "ceiling" else r[part]["tile_megapixels_per_second"]
        assert set(r["targets"]) == {"tilepipe_over_ceiling_per_lattice", "tilepipe_over_monai", "tilepipe_over_naive",
                                     "gpu_busy_fraction"}
    table = (out / "throughput_table.md").read_text().splitlines()
    # the stand-in has one stride: both passes run at it, and the table says so
    assert [row.split("|")[1].strip() for row in table[2:]] == ["8 (ran at 1)", "16 (ran at 1)"]
