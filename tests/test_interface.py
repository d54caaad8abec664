"""The user-facing extras: version, doctor, progress, quiet/verbose/log file."""

from __future__ import annotations

import io

from click.testing import CliRunner

import tilepipe
from tests.conftest import smooth_image, write_geotiff
from tilepipe.blocks import BlockReport
from tilepipe.cli import main
from tilepipe.report.progress import Progress


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and tilepipe.__version__ in result.output


def test_doctor_reports_versions_and_the_weights_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0
    for word in ("torch", "cuda", "rasterio", "GDAL", "zarr", "dask"):
        assert word in result.output
    assert "not cached" in result.output
    cached = tmp_path / "hub" / "checkpoints" / "deeplabv3_resnet101_coco-586e9e4e.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"0" * 1024)
    assert "cached at" in CliRunner().invoke(main, ["doctor"]).output


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_on_a_terminal_and_silent_elsewhere():
    reports = [BlockReport(index=(0, i), core="") for i in range(4)]
    tty = FakeTerminal()
    progress = Progress(stream=tty)
    progress.begin(4, {(0, i): 0.25 for i in range(4)}, reused=0)
    for r in reports:
        progress(r)
    progress.close()
    assert "blocks 4/4" in tty.getvalue() and "MP/s" in tty.getvalue() and "ETA" in tty.getvalue()
    pipe = io.StringIO()
    quiet = Progress(stream=pipe)
    quiet.begin(4, {}, reused=0)
    for r in reports:
        quiet(r)
    quiet.close()
    assert pipe.getvalue() == ""
    p = Progress(stream=pipe)
    p.begin(10, {}, 0)
    p.done = 2
    assert p.line(4.0).endswith("ETA 16 s")


def test_quiet_and_log_file(tmp_path, monkeypatch):
    from tilepipe.sources.geotiff import GeoTiffSource

    src = write_geotiff(tmp_path / "a.tif", smooth_image(128, 128))
    runner = CliRunner()
    ok = runner.invoke(main, ["run", str(src), "-o", str(tmp_path / "q.zarr"), "--model", "standin",
                              "--weights", "none", "-q"])
    assert ok.exit_code == 0 and ok.output == ""

    def broken(self, window, plane=None):
        raise OSError("disk on fire")

    monkeypatch.setattr(GeoTiffSource, "read", broken)
    log = tmp_path / "run.log"
    bad = runner.invoke(main, ["run", str(src), "-o", str(tmp_path / "b.zarr"), "--model", "standin",
                               "--weights", "none", "-q", "--log-file", str(log)])
    assert bad.exit_code == 1 and "disk on fire" in bad.output
    text = log.read_text()
    assert "Traceback" in text and "OSError: disk on fire" in text
