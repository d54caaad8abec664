"""Faults that arrive while a run writes: a full disk, a stop signal, storage that fails for a moment
or for good.

Each fault is made to arrive at a known point (a byte budget, a hook after the N-th stored block, a
filesystem that fails chosen writes), never raced against the run. What must hold after each: one
line on the terminal that names the store and what to do, no traceback, a non-zero exit (130 / 143
for SIGINT / SIGTERM), no lease left, a store that does not say it is complete, and a ``--resume``
that ends with the chunks of an uninterrupted run, byte for byte (the oracle: that run's files).

The stand-in model keeps these tests about I/O and scheduling.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import fsspec
import pytest
from click.testing import CliRunner
from fsspec.implementations.local import LocalFileSystem

import tilepipe
import tilepipe.retry
from tests import ctrl_c_after_blocks, full_disk, signal_after_blocks
from tests.conftest import smooth_image, write_geotiff
from tilepipe.cli import main

REPO = Path(__file__).resolve().parents[1]
OPTIONS = dict(model="standin", weights="none", tile_size=64, overlap=16, chunk_size=128, block_size=128)
FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in OPTIONS.items()]
BLOCKS = 45  # a 600 x 1100 scene in 128 px chunks: 5 chunk rows x 9 strips


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The input, and the store an uninterrupted run makes of it (the oracle of every test)."""
    folder = tmp_path_factory.mktemp("scene")
    image = write_geotiff(folder / "scene.tif", smooth_image(600, 1100))
    reference = folder / "reference.zarr"
    summary = tilepipe.run(str(image), str(reference), **OPTIONS)
    assert summary.ok and summary["plan"]["blocks"] == BLOCKS
    return image, reference


def stored_chunks(store: Path) -> dict[str, bytes]:
    """Every chunk file of the mask, the block records and the pyramid, by path in the store."""
    return {str(f.relative_to(store)): f.read_bytes() for f in sorted(store.rglob("c/**/*")) if f.is_file()}


def run_cli(script: Path, *args, cwd: Path, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)}, **popen)


def assert_one_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def assert_left_for_resume(out: Path) -> None:
    assert not out.with_suffix(".lease.json").exists(), "the lease was not released"
    assert not tilepipe.open(str(out)).is_complete


def assert_resume_completes(image: Path, out: Path, reference: Path) -> dict:
    summary = tilepipe.run(str(image), str(out), resume=True, **OPTIONS)
    assert summary.ok and tilepipe.open(str(out)).is_complete
    assert stored_chunks(out) == stored_chunks(reference)
    return summary.data


def budget_before_pyramid(reference: Path) -> int:
    """Bytes that let every block be stored but not the whole pyramid: the reference's files
    without its pyramid, plus half the pyramid's."""
    sizes = Counter()
    for f in reference.rglob("*"):
        if f.is_file():
            sizes["pyramid" if f.relative_to(reference).parts[0] == "pyramid" else "rest"] += f.stat().st_size
    return sizes["rest"] + sizes["pyramid"] // 2


@pytest.mark.parametrize("where", ["blocks", "pyramid"])
def test_a_full_disk_is_one_line_and_resume_finishes_the_store(scene, tmp_path, where):
    image, reference = scene
    disk = tmp_path / "disk"  # the log file is elsewhere, so that it holds the traceback
    out = disk / "scene_mask.zarr"
    budget = 100_000 if where == "blocks" else budget_before_pyramid(reference)
    log = tmp_path / "run.log"
    result = run_cli(Path(full_disk.__file__), disk, budget, "run", image, "-o", out, *FLAGS, "-q",
                     "--workers", "1", "--log-file", log, cwd=tmp_path)
    assert result.returncode == 1
    line = assert_one_line(result, "no space left on device", f"writing the {where} of {out}",
                           "free space and run again with --resume")
    if where == "blocks":
        assert "blocks not stored" in line
        assert not list(disk.glob("scene_mask.*.*")), "a summary or timeline file was left cut short"
    assert "Traceback" in log.read_text() and "Errno" not in line  # the detail went to the log file
    assert_left_for_resume(out)
    done = int(tilepipe.open(str(out)).done_blocks().sum())
    assert (done < BLOCKS) if where == "blocks" else (done == BLOCKS)
    assert_resume_completes(image, out, reference)


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stop_signal_finishes_the_block_and_resume_goes_on(scene, tmp_path, name, code):
    image, reference = scene
    out = tmp_path / "scene_mask.zarr"
    result = run_cli(Path(signal_after_blocks.__file__), name, 3, 1, "run", image, "-o", out, *FLAGS, "-q",
                     "--workers", "1", cwd=tmp_path)
    assert result.returncode == code, result.stderr[-3000:]
    assert_one_line(result, name, "interrupted", f"blocks done in {out}", "--resume")
    assert_left_for_resume(out)
    done = int(tilepipe.open(str(out)).done_blocks().sum())
    assert 3 <= done < BLOCKS
    saved = json.loads(out.with_suffix(".summary.json").read_text())
    assert saved["status"] == f"interrupted: {done} of {BLOCKS} blocks done"
    resumed = assert_resume_completes(image, out, reference)
    assert resumed["plan"]["blocks_reused"] == done


def test_a_second_ctrl_c_stops_at_once(scene, tmp_path):
    image, reference = scene
    out = tmp_path / "scene_mask.zarr"
    result = run_cli(Path(signal_after_blocks.__file__), "SIGINT", 2, 2, "run", image, "-o", out, *FLAGS, "-q",
                     "--workers", "1", cwd=tmp_path)
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "stopped at once" in result.stderr
    assert not out.with_suffix(".summary.json").exists()  # no summary: it ended at once
    assert_left_for_resume(out)
    assert_resume_completes(image, out, reference)


def test_a_terminal_ctrl_c_leaves_a_local_clusters_workers_running(scene, tmp_path):
    """A terminal sends Ctrl-C's SIGINT to its whole foreground process group, the worker processes
    of ``--cluster local:2`` included: only the client may decide to stop, so the workers finish
    their blocks in flight instead of dying with a KeyboardInterrupt (and being restarted)."""
    image, reference = scene
    out = tmp_path / "scene_mask.zarr"
    result = run_cli(Path(ctrl_c_after_blocks.__file__), 3, "run", image, "-o", out, *FLAGS, "-q",
                     "--cluster", "local:2", cwd=tmp_path, start_new_session=True)
    assert result.returncode == 130, result.stderr[-3000:]
    assert "KeyboardInterrupt" not in result.stderr, result.stderr[-3000:]
    assert_one_line(result, "SIGINT", "interrupted", f"blocks done in {out}", "--resume")
    assert_left_for_resume(out)
    done = int(tilepipe.open(str(out)).done_blocks().sum())
    saved = json.loads(out.with_suffix(".summary.json").read_text())
    heard = int(saved["status"].removeprefix("interrupted: ").removesuffix(f" of {BLOCKS} blocks done"))
    # The summary counts the blocks the client heard of; a task running on a worker when the
    # client stops goes on storing its strip's blocks, which the store records and --resume reuses.
    assert 3 <= heard <= done < BLOCKS
    resumed = assert_resume_completes(image, out, reference)
    assert resumed["plan"]["blocks_reused"] == done


class FlakyFileSystem(LocalFileSystem):
    """Local files behind ``flaky://``, whose writes fail as a remote store's do: ``fails(path,
    attempt)`` says whether this attempt at writing ``path`` raises a dropped connection."""

    protocol = "flaky"
    fails = staticmethod(lambda path, attempt: False)
    attempts: Counter = Counter()
    injected = 0

    def __init__(self, *args, **kwargs):
        super().__init__(auto_mkdir=True)

    def _open(self, path, mode="rb", **kwargs):
        if "r" not in mode:
            path = self._strip_protocol(path)
            FlakyFileSystem.attempts[path] += 1
            if FlakyFileSystem.fails(path, FlakyFileSystem.attempts[path]):
                FlakyFileSystem.injected += 1
                raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer", path)
        return super()._open(path, mode, **kwargs)


@pytest.fixture
def flaky(monkeypatch):
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    monkeypatch.setattr(FlakyFileSystem, "attempts", Counter())
    monkeypatch.setattr(FlakyFileSystem, "injected", 0)
    monkeypatch.setattr("tilepipe.retry.FIRST_DELAY", 0.01)
    return FlakyFileSystem


def test_writes_that_fail_at_first_are_retried_and_counted(scene, tmp_path, flaky, monkeypatch):
    """The first try at writing every other mask chunk, the first block records and the lease
    drops its connection; the run gets over it with the reference's bytes and counts each retry."""
    image, reference = scene

    def first_try_fails(path: str, attempt: int) -> bool:
        name = path.split("scene_mask.zarr/")[-1]
        chunk = name.startswith("mask/c/") and sum(map(int, name.split("/")[2:])) % 2 == 0
        return attempt == 1 and (chunk or name.startswith("blocks/c/0/") or name.endswith(".lease.json"))

    monkeypatch.setattr(flaky, "fails", staticmethod(first_try_fails))
    out = tmp_path / "scene_mask.zarr"
    summary = tilepipe.run(str(image), f"flaky://{out}", **OPTIONS)
    assert summary.ok and tilepipe.open(str(out)).is_complete
    assert flaky.injected > 20
    assert summary["output"]["retries"] == flaky.injected
    assert any("tried again" in w for w in summary["warnings"])
    assert stored_chunks(out) == stored_chunks(reference)


def test_a_write_that_keeps_failing_fails_its_block_only(scene, tmp_path, flaky, monkeypatch):
    image, reference = scene
    monkeypatch.setattr(flaky, "fails", staticmethod(lambda path, attempt: path.endswith("scene_mask.zarr/mask/c/2/4")))
    out = tmp_path / "scene_mask.zarr"
    result = CliRunner().invoke(main, ["run", str(image), "-o", f"flaky://{out}", *FLAGS, "-q"])
    assert result.exit_code == 1
    assert "1 of 45 blocks failed" in result.output and "connection reset by peer" in result.output
    store = tilepipe.open(str(out))
    assert not store.is_complete and int(store.done_blocks().sum()) == BLOCKS - 1
    assert flaky.attempts[str(out / "mask/c/2/4")] == tilepipe.retry.ATTEMPTS
    failed = json.loads(out.with_suffix(".summary.json").read_text())["failed_blocks"]
    assert len(failed) == 1 and "connection reset by peer" in failed[0]["error"]
    assert not out.with_suffix(".lease.json").exists()



def test_a_bug_during_a_run_is_one_line_with_its_traceback_in_the_log(scene, tmp_path, monkeypatch):
    import tilepipe.pipeline

    def broken(store):
        raise KeyError("a bug")

    monkeypatch.setattr(tilepipe.pipeline, "build_pyramid", broken)
    image, _ = scene
    out, log = tmp_path / "scene_mask.zarr", tmp_path / "run.log"
    result = CliRunner().invoke(main, ["run", str(image), "-o", str(out), *FLAGS, "-q", "--log-file", str(log)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: unexpected error while writing {out}: KeyError")
    assert f"its traceback is in {log}" in lines[0]
    assert "Traceback" in log.read_text() and "raise KeyError" in log.read_text()
    assert_left_for_resume(out)
