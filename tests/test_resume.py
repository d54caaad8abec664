"""What ``--resume`` must notice: an input rewritten since the store was made, chunks lost from
finished blocks, and a store of an unfinished run named without ``--resume``.

Runs are stopped at a known block by :mod:`tests.exit_after_blocks` (a process that ends right
after storing its N-th block, as a crash would), never by a kill raced against the run. The
stand-in model keeps these tests about stores and records, not the network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import tilepipe
from tests import exit_after_blocks
from tests.conftest import smooth_image, write_geotiff

STANDIN = {"model": "standin", "weights": "none", "tile_size": 128, "overlap": 16, "workers": 1,
           "chunk_size": 64, "block_size": 128}
REPO = Path(__file__).resolve().parents[1]


def flags(options: dict) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]


def stop_after_blocks(blocks: int, image: Path, out: Path, *extra: str) -> None:
    """Run the CLI on ``image`` until it has stored ``blocks`` blocks, and end it there."""
    done = subprocess.run([sys.executable, exit_after_blocks.__file__, str(blocks), "run", str(image), "-o", str(out),
                           "-q", *flags(STANDIN), *extra], capture_output=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == exit_after_blocks.EXIT_CODE, done.stderr.decode()[-2000:]


def chunk_files(store: Path, array: str = "mask") -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted((store / array).rglob("*")) if p.is_file()}


def snapshot(store: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a store with its modification time and bytes: "untouched" means equal."""
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.fixture
def scene(tmp_path) -> Path:
    return write_geotiff(tmp_path / "scene.tif", smooth_image(300, 400, seed=0))


def test_a_resume_after_the_input_was_rewritten_in_place_is_refused(scene, tmp_path):
    out = tmp_path / "out.zarr"
    stop_after_blocks(2, scene, out)
    stat = scene.stat()
    write_geotiff(scene, smooth_image(300, 400, seed=1))  # other pixels, same size and type...
    os.utime(scene, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and the old modification time
    assert scene.stat().st_size == stat.st_size
    before = snapshot(out)
    with pytest.raises(tilepipe.TilepipeError, match=rf"cannot resume.*{scene}.*rewritten.*content \(sampled bytes "
                                                     r"differ; its modification time is the same\).*left untouched"):
        tilepipe.run(str(scene), str(out), resume=True, **STANDIN)
    assert snapshot(out) == before


def test_a_resume_after_the_input_grew_names_its_size(scene, tmp_path):
    out = tmp_path / "out.zarr"
    stop_after_blocks(2, scene, out)
    size = scene.stat().st_size
    with open(scene, "ab") as f:  # bytes appended after the image: GDAL still reads the same pixels
        f.write(b"\0" * 10)
    with pytest.raises(tilepipe.TilepipeError, match=rf"{scene} was rewritten: size \({size} then, {size + 10} now\)"):
        tilepipe.run(str(scene), str(out), resume=True, **STANDIN)


def test_a_resume_after_a_touch_completes_byte_for_byte(scene, tmp_path, caplog):
    reference = tmp_path / "reference.zarr"
    tilepipe.run(str(scene), str(reference), **STANDIN)
    out = tmp_path / "out.zarr"
    stop_after_blocks(2, scene, out)
    later = scene.stat().st_mtime + 3600
    os.utime(scene, (later, later))
    summary = tilepipe.run(str(scene), str(out), resume=True, **STANDIN)
    assert summary["plan"]["blocks_reused"] == 2
    assert chunk_files(out) == chunk_files(reference)
    assert tilepipe.open(str(out)).is_complete
    assert any("sampled bytes are the same: resuming" in r.getMessage() for r in caplog.records)


def test_a_dicom_series_with_a_file_rewritten_under_its_uid_is_refused(tmp_path):
    import pydicom

    from tilepipe.testing import write_ct_series

    folder = tmp_path / "series"
    write_ct_series(folder, slices=4, size=64)
    out = tmp_path / "ct.zarr"
    stop_after_blocks(1, folder, out)
    victim = sorted(folder.iterdir())[1]
    ds = pydicom.dcmread(victim)
    ds.ImageComments = "rewritten"  # same SOPInstanceUID, another file
    ds.save_as(victim)
    with pytest.raises(tilepipe.TilepipeError, match=r"the same SOPInstanceUIDs, but files of other sizes"):
        tilepipe.run(str(folder), str(out), resume=True, **STANDIN)


@pytest.fixture
def http_folder(tmp_path):
    """``(folder, base URL)``: a local HTTP server that serves ``folder`` with Last-Modified headers
    (Python's own file server: no ETag)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


def test_a_url_is_identified_by_what_its_server_says(http_folder):
    from email.utils import formatdate

    from tilepipe.sources.identity import content_changes, url_identity

    folder, base = http_folder
    scene = write_geotiff(folder / "scene.tif", smooth_image(30, 40))
    os.utime(scene, (1_700_000_000, 1_700_000_000))
    then = url_identity(f"{base}/scene.tif")
    assert then["size"] == scene.stat().st_size and then["etag"] is None
    assert then["last_modified"] == formatdate(1_700_000_000, usegmt=True)  # what the server sent
    assert content_changes(then, url_identity(f"{base}/scene.tif"), "scene.tif") == ([], [])
    os.utime(scene, (1_700_000_060, 1_700_000_060))
    changes, _ = content_changes(then, url_identity(f"{base}/scene.tif"), "scene.tif")
    assert changes == [f"input: scene.tif changed on the server: Last-Modified ({formatdate(1_700_000_000, usegmt=True)!r} "
                       f"then, {formatdate(1_700_000_060, usegmt=True)!r} now)"]
    with_etag = {**then, "etag": '"abc"'}
    assert content_changes(with_etag, {**with_etag, "last_modified": "later"}, "s") == ([], [])  # the ETag decides
    assert content_changes(with_etag, {**with_etag, "etag": '"abd"'}, "s")[0]


@pytest.fixture
def half_empty(tmp_path) -> Path:
    """A scene whose top 128 rows are nodata: with 64 px chunks, its first two chunk rows are
    blocks with no valid pixel, whose chunks are rightly never stored."""
    data = smooth_image(300, 400, seed=2)
    data = np.where(data == 0, 1, data)
    data[:, :128] = 0
    return write_geotiff(tmp_path / "half.tif", data, nodata=0)


def test_a_chunk_lost_from_a_finished_block_is_repaired_by_resume(half_empty, tmp_path, caplog):
    reference = tmp_path / "reference.zarr"
    tilepipe.run(str(half_empty), str(reference), probabilities=True, **STANDIN)
    expected = {a: chunk_files(reference, a) for a in ("mask", "probabilities")}
    assert not any(k.startswith(("mask/c/0/", "mask/c/1/")) for k in expected["mask"])  # no-data rows: no chunk
    out = tmp_path / "out.zarr"
    tilepipe.run(str(half_empty), str(out), probabilities=True, **STANDIN)
    (out / "mask" / "c" / "3" / "2").unlink()  # a lost write: block (3, 1) (strip 1: columns 128-255)
    (out / "probabilities" / "c" / "0" / "4" / "0").unlink()  # and block (4, 0) lost one chunk of another array
    summary = tilepipe.run(str(half_empty), str(out), resume=True, probabilities=True, **STANDIN)
    assert summary["plan"]["blocks_repaired"] == 2 and summary["plan"]["blocks_run"] == 2
    assert summary["plan"]["blocks_reused"] == summary["plan"]["blocks"] - 2
    assert {a: chunk_files(out, a) for a in ("mask", "probabilities")} == expected
    assert tilepipe.open(str(out)).is_complete
    assert any("2 finished block(s) lack chunks" in r.getMessage() for r in caplog.records)
    assert "2 repaired (their chunks were missing)" in (tmp_path / "out.summary.md").read_text()
    again = tilepipe.run(str(half_empty), str(out), resume=True, probabilities=True, **STANDIN)
    assert again["plan"]["blocks_repaired"] == 0 and again["plan"]["blocks_run"] == 0


def test_a_lost_class_tally_of_a_finished_block_is_repaired_by_resume(half_empty, tmp_path):
    """A block's class tally is one of its chunks too: lost, its pixels would drop out of the
    measures unseen. The oracle: the class counts of the uninterrupted run's mask, by bincount."""
    import numpy as np

    out = tmp_path / "out.zarr"
    tilepipe.run(str(half_empty), str(out), **STANDIN)
    mask = tilepipe.open(str(out)).mask[...]
    (out / "class_tally" / "c" / "3" / "1" / "0" / "0").unlink()  # block (3, 1)'s record of its classes
    summary = tilepipe.run(str(half_empty), str(out), resume=True, **STANDIN)
    assert summary["plan"]["blocks_repaired"] == 1
    counts = np.bincount(mask[mask != 255].ravel())
    assert {c["id"]: c["pixels"] for c in summary["measures"]["classes"]} == {
        i: int(n) for i, n in enumerate(counts) if n}


def test_the_store_of_an_unfinished_run_suggests_resume(scene, tmp_path):
    from click.testing import CliRunner

    from tilepipe.cli import main

    out = tmp_path / "out.zarr"
    stop_after_blocks(3, scene, out)
    group = zarr.open_group(str(out), mode="r")
    done, total = int((group["blocks"][...] > 0).sum()), group["blocks"].size
    assert (done, total) == (3, 20)  # 5 chunk rows x 4 strips, as stored
    before = snapshot(out)
    result = CliRunner().invoke(main, ["run", str(scene), "-o", str(out), *flags(STANDIN)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {out}: holds a run that did not finish (3 of 20 blocks done); finish it with --resume "
        "(or pass --overwrite to start again)"]
    assert snapshot(out) == before


def test_an_unfinished_store_of_an_earlier_tilepipe_suggests_overwrite_not_resume(scene, tmp_path):
    """A store that recorded no content identity cannot be resumed (its input cannot be shown
    unchanged): its refusal must not send the user to a --resume that refuses in turn."""
    out = tmp_path / "out.zarr"
    stop_after_blocks(3, scene, out)
    group = zarr.open_group(str(out), mode="r+")
    info = dict(group.attrs["tilepipe"])
    info["fingerprint"] = {k: v for k, v in info["fingerprint"].items() if k != "content"}
    group.attrs["tilepipe"] = info
    with pytest.raises(tilepipe.TilepipeError) as caught:
        tilepipe.run(str(scene), str(out), **STANDIN)
    assert "cannot be resumed; pass --overwrite" in str(caught.value) and "--resume" not in str(caught.value)
    with pytest.raises(tilepipe.TilepipeError, match="input identity"):
        tilepipe.run(str(scene), str(out), resume=True, **STANDIN)
