"""Many inputs in one run: a store per input, one bad input failing alone, resume, a cluster, a study.

With the stand-in model: these tests are about inputs, stores and scheduling, not the network.
Every batch store is held to a single run of the same input (its chunk files, byte for byte), and
series shapes to the headers the test wrote.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
import zarr
from click.testing import CliRunner

import tilepipe
from tilepipe.batch import run_batch
from tilepipe.batch_inputs import collect_inputs
from tilepipe.cli import main
from tilepipe.engine import cached_engine
from tilepipe.testing import write_ct_series, write_sr

from tests import exit_after_blocks, signal_after_blocks
from tests.conftest import smooth_image, write_geotiff

OPTIONS = {"model": "standin", "weights": "none", "tile_size": 128, "overlap": 16, "workers": 1,
           "chunk_size": 128, "block_size": 256}
FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in OPTIONS.items()]
REPO = Path(__file__).resolve().parents[1]


def chunk_files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted((store / "mask").rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Three scenes in a folder, one in a subfolder (run in the order a, c, sub/b): 1, 6 and 2 blocks
    of the plan above."""
    folder = tmp_path_factory.mktemp("scenes")
    (folder / "sub").mkdir()
    paths = {"a": write_geotiff(folder / "a.tif", smooth_image(100, 120, seed=1)),
             "b": write_geotiff(folder / "sub" / "b.tif", smooth_image(256, 256, seed=2)),
             "c": write_geotiff(folder / "c.tif", smooth_image(300, 400, seed=3))}
    return folder, paths


@pytest.fixture(scope="module")
def singles(scenes, tmp_path_factory):
    """Each scene run on its own: the bytes every batch must reproduce."""
    out = tmp_path_factory.mktemp("singles")
    result = {}
    for name, path in scenes[1].items():
        tilepipe.run(path, out / f"{name}.zarr", **OPTIONS)
        result[name] = chunk_files(out / f"{name}.zarr")
    return result


def read_batch(outdir: Path) -> dict:
    return {row["name"]: row for row in json.loads((outdir / "batch.summary.json").read_text())["inputs"]}


def test_a_truncated_scene_fails_alone_and_the_model_loads_once(scenes, singles, tmp_path):
    folder = tmp_path / "scenes"
    (folder / "sub").mkdir(parents=True)
    for name, rel in (("a", "a.tif"), ("b", "sub/b.tif")):
        (folder / rel).write_bytes(scenes[1][name].read_bytes())
    whole = scenes[1]["c"].read_bytes()
    (folder / "c.tif").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    cached_engine.cache_clear()
    result = CliRunner().invoke(main, ["run", str(folder), "-o", str(out), "-q", *FLAGS])
    assert result.exit_code == 1
    assert "1 of 3 inputs failed (first: c:" in result.output and "truncated" in result.output
    assert cached_engine.cache_info().misses == 1  # one engine (one model load) for the whole batch
    rows = read_batch(out)
    assert [rows[n]["status"] for n in "abc"] == ["complete", "complete", "failed"]
    assert "c.tif" in rows["c"]["error"] and "truncated" in rows["c"]["error"]
    assert rows["b"]["pixels"] == 256 * 256 and rows["b"]["input"] == str(folder / "sub" / "b.tif")
    assert "c: " in (out / "batch.summary.md").read_text()
    assert not (out / "c.zarr").exists()  # nothing that looks like an output
    for name in "ab":
        assert chunk_files(out / f"{name}.zarr") == singles[name]
        assert tilepipe.open(str(out / f"{name}.zarr")).is_complete
        assert (out / f"{name}.summary.md").exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_batch_killed_after_three_blocks_resumes(scenes, singles, tmp_path):
    folder, paths = scenes
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, exit_after_blocks.__file__, "3", "run", str(folder), "-o", str(out),
                             "-q", *FLAGS], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    assert killed.returncode == exit_after_blocks.EXIT_CODE, killed.stderr.decode()[-2000:]
    assert tilepipe.open(str(out / "a.zarr")).is_complete  # its one block, then c's first two
    partial = int(tilepipe.open(str(out / "c.zarr")).done_blocks().sum())
    assert 1 <= partial < 6 and not (out / "b.zarr").exists()

    terminal = _Terminal()
    run_batch([str(folder)], str(out), resume=True, progress_stream=terminal, **OPTIONS)
    rows = read_batch(out)
    assert [rows[n]["status"] for n in "abc"] == ["kept", "complete", "complete"]
    c = json.loads((out / "c.summary.json").read_text())
    assert c["plan"]["blocks_reused"] == partial
    assert "inputs 3/3" in terminal.getvalue()
    for name in "abc":
        assert chunk_files(out / f"{name}.zarr") == singles[name]
        assert tilepipe.open(str(out / f"{name}.zarr")).is_complete


def test_a_stop_signal_ends_the_batch_and_resume_finishes_it(scenes, singles, tmp_path):
    """SIGTERM during c (the second input, after 2 of its 6 blocks plus a's one): c stops after its
    block in flight, b never starts, the batch ends 143 with one line saying --resume, and the
    resume completes every store to the single runs' bytes."""
    folder, paths = scenes
    out = tmp_path / "out"
    stopped = subprocess.run([sys.executable, signal_after_blocks.__file__, "SIGTERM", "3", "1", "run", str(folder),
                              "-o", str(out), "-q", *FLAGS], cwd=REPO, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "SIGTERM" in errors[0] and "--resume" in errors[0], stopped.stderr[-3000:]
    rows = read_batch(out)
    assert [rows[n]["status"] for n in "abc"] == ["complete", "interrupted", "interrupted"]
    assert "not started" in rows["b"]["error"] and not (out / "b.zarr").exists()
    partial = int(tilepipe.open(str(out / "c.zarr")).done_blocks().sum())
    assert 2 <= partial < 6
    run_batch([str(folder)], str(out), resume=True, quiet=True, **OPTIONS)
    assert [read_batch(out)[n]["status"] for n in "abc"] == ["kept", "complete", "complete"]
    for name in "abc":
        assert chunk_files(out / f"{name}.zarr") == singles[name]


def test_a_list_on_a_local_cluster_gives_the_same_bytes(scenes, singles, tmp_path):
    paths = scenes[1]
    out = tmp_path / "out"
    summary = run_batch([str(paths[n]) for n in "abc"], str(out), cluster="local:2", **OPTIONS)
    assert summary["counts"] == {"inputs": 3, "complete": 3, "kept": 0, "failed": 0, "interrupted": 0}
    assert "LocalCluster of 2" in summary["scheduling"]
    for name in "abc":
        assert chunk_files(out / f"{name}.zarr") == singles[name]


def test_every_series_of_a_study(tmp_path):
    study = tmp_path / "study"
    write_ct_series(study / "s1", slices=5, size=64, description="CT chest")
    write_ct_series(study / "s2", slices=3, size=96, description="CT head")
    write_sr(study / "report.dcm")
    out = tmp_path / "out"
    refused = CliRunner().invoke(main, ["run", str(study), "-o", str(tmp_path / "one.zarr"), *FLAGS])
    assert refused.exit_code != 0 and "--series UID" in refused.output  # one run never guesses
    summary = run_batch([str(study)], str(out), all_series=True, **OPTIONS)
    assert summary["non_image_objects_skipped"] == 1
    rows = {row["name"]: row for row in summary["inputs"]}
    assert set(rows) == {"1_CT_chest", "1_CT_head"}
    for name, (slices, size), folder in (("1_CT_chest", (5, 64), "s1"), ("1_CT_head", (3, 96), "s2")):
        group = zarr.open_group(str(out / f"{name}.zarr"), mode="r")
        assert group["mask"].shape == (slices, size, size)
        written = pydicom.dcmread(next((study / folder).glob("*.dcm"))).SeriesInstanceUID
        assert group.attrs["tilepipe"]["options"]["series"] == written == rows[name]["series"]
        assert tilepipe.open(str(out / f"{name}.zarr")).is_complete


def test_inputs_are_named_by_stem_uniquely_in_path_order(tmp_path):
    for rel in ("z/scene.tif", "a/scene.TIF", "batch.tif", "notes.txt", "m/x y.tiff"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = collect_inputs([str(tmp_path), "s3://bucket/scene.tif"])
    assert [(i.name, Path(i.path).name) for i in found.items] == [
        ("scene", "scene.TIF"), ("batch-2", "batch.tif"), ("x_y", "x y.tiff"), ("scene-2", "scene.tif"),
        ("scene-3", "scene.tif")]
    assert not found.single
    assert collect_inputs([str(tmp_path / "a" / "scene.TIF")]).single
