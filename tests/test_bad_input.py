"""Every kind of bad input a user can hand tilepipe, in one table.

Each case builds its bad input in a fresh folder and runs the real command line. What must hold for
every one of them:

* a non-zero exit;
* exactly one output line, ``Error: ...``, that names the problem (and the file, where there is one);
* no traceback from deep inside a library;
* no store at the output that looks finished (none at all, or one whose ``complete`` flag is false),
  and an output that existed before is left as it was.

The cases use the cheap stand-in model: they are about refusing input, not about the network.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
import pytest
import rasterio
import yaml
from click.testing import CliRunner

import tilepipe
from tests.conftest import shared_file, smooth_image, write_geotiff
from tests.dicom_helpers import dicom_data
from tilepipe.cli import main
from tilepipe.testing import write_ct_series, write_sr

STANDIN = ("--model", "standin", "--weights", "none")
SMALL = ("--tile-size", "64", "--overlap", "16", "--chunk-size", "64", "--block-size", "128")


@dataclass(frozen=True)
class Case:
    """``build(tmp)`` returns the command line (after ``tilepipe``); ``says`` are fragments the one
    error line must hold (``{tmp}`` is replaced by the case's folder)."""

    build: Callable[[Path], list]
    says: tuple[str, ...]
    preexisting_output: bool = False


def _image(tmp: Path, name: str = "scene.tif", data=None, **kwargs) -> Path:
    return write_geotiff(tmp / name, smooth_image(96, 128) if data is None else data, **kwargs)


def _run(tmp: Path, *args, source=None) -> list:
    return ["run", source or _image(tmp), "-o", tmp / "out.zarr", *STANDIN, *args]


def _finished_store(tmp: Path, *args) -> Path:
    """A complete store made by a good run, for the cases about an existing output."""
    src = _image(tmp)
    result = CliRunner().invoke(main, [str(a) for a in ["run", src, "-o", tmp / "out.zarr", *STANDIN, *SMALL, *args]])
    assert result.exit_code == 0, result.output
    return src


def _resume_with(*changed):
    def build(tmp):
        src = _finished_store(tmp, "--precision", "fp32")
        return ["run", src, "-o", tmp / "out.zarr", *STANDIN, *SMALL, "--resume", *changed]
    return build


def _while_another_run_is_live(*args):
    """A finished store whose lease file names a live holder (this very process, renewed just now),
    as a run in another terminal would leave it; then a second writer with ``args``."""
    def build(tmp):
        src = _finished_store(tmp)
        now = time.time()
        holder = {"run_id": "feedc0de", "host": socket.gethostname(), "pid": os.getpid(), "started": now,
                  "renewed": now}
        (tmp / "out.lease.json").write_text(json.dumps(holder))
        return ["run", src, "-o", tmp / "out.zarr", *STANDIN, *SMALL, *args]
    return build


def _truncated_tiff(keep: float):
    def build(tmp):
        with rasterio.open(shared_file("geotiff", "rgb_lzw.tif")) as ds:
            profile, pixels = ds.profile, ds.read()
        full = tmp / "full.tif"
        with rasterio.open(full, "w", **profile) as dst:
            dst.write(pixels)
        data = full.read_bytes()
        (tmp / "cut.tif").write_bytes(data[: int(len(data) * keep)])
        return _run(tmp, source=tmp / "cut.tif")
    return build


def _text_file(name: str, text: str):
    def build(tmp):
        (tmp / name).write_text(text)
        return _run(tmp, source=tmp / name)
    return build


def _config(text: str):
    def build(tmp):
        (tmp / "c.yaml").write_text(text)
        return _run(tmp, "--config", tmp / "c.yaml")
    return build


def _nan_image(tmp: Path) -> Path:
    data = smooth_image(96, 128, dtype=np.float32) / 4000
    data[:, 10:20, 30:40] = np.nan
    return _image(tmp, "nan.tif", data=data, nodata=float("nan"))


def _dicom_cut_mid_frame(tmp: Path) -> list:
    """A multi-frame file cut in the middle of its fifth frame: the header is whole, a frame is not."""
    src = dicom_data("multiframe", "emri_small.dcm")
    ds = pydicom.dcmread(src)
    frame_bytes = ds.Rows * ds.Columns * ds.BitsAllocated // 8
    data = src.read_bytes()
    pixel_start = len(data) - len(ds.PixelData)
    victim = tmp / "cut_frames.dcm"
    victim.write_bytes(data[: pixel_start + 4 * frame_bytes + frame_bytes // 2])
    return ["run", victim, "-o", tmp / "out.zarr", *STANDIN]


def _dicom_run(tmp: Path, source, *args) -> list:
    return ["run", source, "-o", tmp / "out.zarr", *STANDIN, *args]


def _series_with_a_cut_slice(tmp: Path) -> list:
    victim = write_ct_series(tmp / "s", 4)[2]
    victim.write_bytes(victim.read_bytes()[:-1000])
    return _dicom_run(tmp, tmp / "s")


def _two_series(tmp: Path) -> Path:
    write_ct_series(tmp / "two" / "a", 3, series_uid="1.2.3.4.1")
    write_ct_series(tmp / "two" / "b", 3, series_uid="1.2.3.4.2")
    return tmp / "two"


def _stack(kind: str):
    def build(tmp):
        folder = tmp / kind
        if kind == "mixed":
            write_ct_series(folder / "axial", 3, series_uid="1.2.3.9")
            write_ct_series(folder / "coronal", 3, series_uid="1.2.3.9", orientation=(1, 0, 0, 0, 0, -1))
        elif kind == "duplicate":
            write_ct_series(folder / "a", 3, series_uid="1.2.3.8")
            write_ct_series(folder / "b", 3, series_uid="1.2.3.8")
        else:
            write_ct_series(folder / "a", 2, series_uid="1.2.3.7")
            write_ct_series(folder / "b", 2, size=32, series_uid="1.2.3.7")
        return _dicom_run(tmp, folder)
    return build


def _weights_file(content: bytes):
    def build(tmp):
        (tmp / "model.pt").write_bytes(content)
        return ["run", _image(tmp), "-o", tmp / "out.zarr", "--model", "standin", "--weights", tmp / "model.pt"]
    return build


def _standin_checkpoint(*args):
    """A 3-channel stand-in checkpoint (its first convolution takes 3 bands), run with ``args``."""
    def build(tmp):
        import torch

        from tilepipe.model import StandIn

        torch.save(StandIn(4).state_dict(), tmp / "three.pt")
        return ["run", _image(tmp, data=smooth_image(64, 64, bands=4)), "-o", tmp / "out.zarr", "--model", "standin",
                "--weights", tmp / "three.pt", *args]
    return build


def _card(text: str, *args):
    def build(tmp):
        (tmp / "card.yaml").write_text(text)
        return _run(tmp, "--model-card", tmp / "card.yaml", *args)
    return build


CASES = {
    # --- the input file --------------------------------------------------------------------------
    "missing file": Case(lambda t: _run(t, source=t / "nope.tif"), ("nope.tif", "no such file")),
    "text file named .tif": Case(_text_file("notes.tif", "not an image"), ("notes.tif", "not a readable raster")),
    "empty file": Case(_text_file("empty.tif", ""), ("empty.tif",)),
    "tiff cut at half": Case(_truncated_tiff(0.5), ("cut.tif",)),
    "tiff cut near its end": Case(_truncated_tiff(0.97), ("cut.tif",)),
    "two-band image without --bands": Case(
        lambda t: _run(t, source=_image(t, data=smooth_image(64, 64, bands=2))), ("2 bands", "--bands")),
    # --- bands and scaling -----------------------------------------------------------------------
    "band out of range": Case(lambda t: _run(t, "--bands", "4,2,1"), ("band 4 is out of range",)),
    "band zero": Case(lambda t: _run(t, "--bands", "0,1,2"), ("band 0 is out of range",)),
    "bands not numbers": Case(lambda t: _run(t, "--bands", "red,green"), ("bands", "red")),
    "scaling not understood": Case(lambda t: _run(t, "--scaling", "bright"), ("--scaling", "bright")),
    "scaling high below low": Case(lambda t: _run(t, "--scaling", "9,3"), ("--scaling", "HIGH must be greater")),
    "dtype scaling of a float image": Case(
        lambda t: _run(t, "--scaling", "dtype", source=_image(t, data=smooth_image(64, 64).astype(np.float32))),
        ("--scaling dtype", "float32")),
    "dtype scaling of a NaN image": Case(lambda t: _run(t, "--scaling", "dtype", source=_nan_image(t)),
                                         ("--scaling dtype", "float32")),
    "percentiles reversed": Case(lambda t: _run(t, "--scaling", "percentile", "--percentiles", "98,2"),
                                 ("percentiles", "LOW < HIGH")),
    # --- the plan ----------------------------------------------------------------------------------
    "tile size zero": Case(lambda t: _run(t, "--tile-size", "0"), ("tile",)),
    "tile size off the output stride": Case(
        lambda t: ["run", _image(t), "-o", t / "out.zarr", "--weights", "none", "--tile-size", "100"],
        ("tile", "100", "8")),
    "overlap as big as the tile": Case(lambda t: _run(t, "--tile-size", "64", "--overlap", "64"), ("overlap",)),
    "negative overlap": Case(lambda t: _run(t, "--overlap", "-8"), ("overlap",)),
    "chunk size zero": Case(lambda t: _run(t, "--chunk-size", "0"), ("chunk",)),
    "block not a multiple of the chunk": Case(lambda t: _run(t, "--chunk-size", "64", "--block-size", "96"),
                                              ("block", "chunk")),
    "unknown blending": Case(lambda t: _run(t, "--blending", "average"), ("blending", "average")),
    # --- the model ---------------------------------------------------------------------------------
    "missing checkpoint": Case(
        lambda t: ["run", _image(t), "-o", t / "out.zarr", "--model", "standin", "--weights", t / "gone.pt"],
        ("gone.pt",)),
    "checkpoint that is text": Case(_weights_file(b"these are not weights"), ("model.pt",)),
    "checkpoint that is a pickle of code": Case(
        _weights_file(b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94."),
        ("model.pt",)),
    "num-classes 255 (the no-data label)": Case(lambda t: _run(t, "--num-classes", "255"), ("255",)),
    "num-classes zero": Case(lambda t: _run(t, "--num-classes", "0"), ("num",)),
    "class names of the wrong count": Case(lambda t: _run(t, "--num-classes", "3", "--class-names", "a,b"),
                                           ("2 class names", "3 classes")),
    "unknown output stride": Case(lambda t: _run(t, "--output-stride", "32"), ("output-stride", "32")),
    "unknown architecture": Case(lambda t: _run(t, "--model", "unet"), ("--model", "unet", "deeplabv3_resnet101")),
    "bands that do not fit the checkpoint": Case(_standin_checkpoint("--bands", "1,2,3,4"),
                                                 ("gives 4 band(s)", "takes 3 input channels")),
    "model card with an unknown key": Case(_card("colour: red\n"), ("card.yaml", "unknown model card key")),
    "model card scaling for other bands": Case(_card("scaling: {low: [0, 0], high: [1, 1]}\n"),
                                               ("card.yaml", "2 band(s)", "gives 3")),
    "--scaling card without a card": Case(lambda t: _run(t, "--scaling", "card"), ("--scaling card", "model card")),
    # --- the engine and the scheduler --------------------------------------------------------------
    "fp16 on a CPU": Case(lambda t: _run(t, "--device", "cpu", "--precision", "fp16"), ("fp16", "CUDA")),
    "unknown device": Case(lambda t: _run(t, "--device", "tpu9"), ("--device", "tpu9")),
    "batch size zero": Case(lambda t: _run(t, "--batch-size", "0"), ("batch", "0")),
    "batch size not a number": Case(lambda t: _run(t, "--batch-size", "many"), ("batch", "many")),
    "zero workers": Case(lambda t: _run(t, "--workers", "0"), ("--workers", "0")),
    "cluster not local:N": Case(lambda t: _run(t, "--cluster", "big"), ("--cluster", "local:N")),
    "cluster and scheduler both": Case(lambda t: _run(t, "--cluster", "local:1", "--scheduler", "tcp://127.0.0.1:1"),
                                       ("--cluster", "--scheduler")),
    # --- the output --------------------------------------------------------------------------------
    "output exists without --overwrite": Case(
        lambda t: ["run", _finished_store(t), "-o", t / "out.zarr", *STANDIN], ("already exists", "--overwrite"),
        preexisting_output=True),
    "overwrite of a folder that is not a store": Case(
        lambda t: ((t / "out.zarr").mkdir(), (t / "out.zarr" / "thesis.tex").write_text("..."),
                   _run(t, "--overwrite"))[-1], ("not a tilepipe store",), preexisting_output=True),
    "output is an existing plain file": Case(
        lambda t: ((t / "out.zarr").write_text("keep me"), _run(t, "--overwrite"))[-1],
        ("not a tilepipe store",), preexisting_output=True),
    "output URL of an unknown protocol": Case(
        lambda t: ["run", _image(t), "-o", "nosuch://bucket/out.zarr", *STANDIN], ("nosuch://", "protocol")),
    "output where nothing can be written": Case(
        lambda t: ["run", _image(t), "-o", "/proc/tilepipe-out.zarr", *STANDIN], ("/proc/tilepipe-out.zarr",)),
    "an --overwrite while another run is live": Case(_while_another_run_is_live("--overwrite"),
                                                     ("another run is writing", "feedc0de"), preexisting_output=True),
    "a --resume while another run is live": Case(_while_another_run_is_live("--resume"),
                                                 ("another run is writing", "feedc0de"), preexisting_output=True),
    "resume with nothing to resume": Case(lambda t: _run(t, "--resume"), ("nothing to resume",)),
    "resume and overwrite together": Case(lambda t: _run(t, "--resume", "--overwrite"), ("--resume", "--overwrite")),
    "resume with another tile size": Case(_resume_with("--tile-size", "32"), ("cannot resume", "tile"),
                                          preexisting_output=True),
    "resume with another precision": Case(_resume_with("--precision", "bf16"), ("cannot resume", "precision"),
                                          preexisting_output=True),
    # --- configuration -----------------------------------------------------------------------------
    "missing config file": Case(lambda t: _run(t, "--config", t / "nope.yaml"), ("nope.yaml", "no such config")),
    "config that is not YAML": Case(_config("tile_size: [512\n"), ("c.yaml", "not valid YAML")),
    "config with an unknown key": Case(_config("tile_sise: 512\n"), ("c.yaml", "unknown option", "tile_sise")),
    "config that is a list": Case(_config(yaml.safe_dump([1, 2])), ("c.yaml", "mapping")),
    # --- DICOM -------------------------------------------------------------------------------------
    "folder without DICOM": Case(
        lambda t: ((t / "empty").mkdir(), (t / "empty" / "a.txt").write_text("hi"), _dicom_run(t, t / "empty"))[-1],
        ("no DICOM image found",)),
    "DICOM without pixel data": Case(lambda t: _dicom_run(t, write_sr(t / "report.dcm")), ("report.dcm", "no pixel data")),
    "DICOM header cut before the pixels": Case(
        lambda t: ((t / "cut.dcm").write_bytes(dicom_data("single", "CT_small.dcm").read_bytes()[:1500]),
                   _dicom_run(t, t / "cut.dcm"))[-1], ("cut.dcm",)),
    "DICOM truncated in mid-frame": Case(_dicom_cut_mid_frame, ("cut_frames.dcm", "truncated")),
    "DICOM series with a truncated slice": Case(_series_with_a_cut_slice, ("truncated",)),
    "two series without --series": Case(lambda t: _dicom_run(t, _two_series(t)), ("2 series", "--series")),
    "a --series that is not there": Case(lambda t: _dicom_run(t, _two_series(t), "--series", "9.9.9"), ("9.9.9",)),
    "mixed slice orientations": Case(_stack("mixed"), ("mixes 2 slice orientations",)),
    "duplicate slice positions": Case(_stack("duplicate"), ("the same slice position",)),
    "slices of different sizes": Case(_stack("sizes"), ("rows x columns",)),
    "--select of a value no frame has": Case(
        lambda t: (write_ct_series(t / "e", 3, echoes=2), _dicom_run(t, t / "e", "--select", "EchoNumbers=3"))[-1],
        ("EchoNumbers 3",)),
    "--select that is not KEY=VALUE": Case(
        lambda t: (write_ct_series(t / "e", 3, echoes=2), _dicom_run(t, t / "e", "--select", "EchoNumbers"))[-1],
        ("KEY=VALUE",)),
    "4-D volumes of different slice counts": Case(
        lambda t: (write_ct_series(t / "e", 3, echoes=2)[0].unlink(), _dicom_run(t, t / "e"))[-1], ("--select",)),
    "window not understood": Case(lambda t: _dicom_run(t, dicom_data("single", "CT_small.dcm"), "--window", "dark"),
                                  ("--window", "dark")),
    "whole-slide level out of range": Case(lambda t: _dicom_run(t, dicom_data("wsi_cmu1"), "--level", "40"),
                                           ("level", "40")),
}


def _snapshot(path: Path) -> dict:
    if not path.exists():
        return {}
    if path.is_file():
        return {path: path.read_bytes()}
    return {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line_and_no_finished_store(name, tmp_path):
    case = CASES[name]
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in case.build(tmp_path)]
    out = tmp_path / "out.zarr"
    before = _snapshot(out)
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0, f"{name}: exit 0\n{result.output}"
    assert "Traceback" not in result.output, f"{name}: {result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), f"{name}: {result.exception!r}"
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), f"{name}: {result.output}"
    for fragment in case.says:
        assert fragment.lower() in lines[0].lower(), f"{name}: {fragment!r} not in {lines[0]!r}"
    if case.preexisting_output:
        assert _snapshot(out) == before, f"{name}: the existing output was changed"
    elif out.exists():
        assert (out / "zarr.json").exists() and not tilepipe.open(str(out)).is_complete, \
            f"{name}: left an output that is not an incomplete tilepipe store"


def test_the_table_covers_at_least_forty_kinds_of_bad_input():
    assert len(CASES) >= 40


def test_an_all_nan_image_is_not_bad_input_but_all_no_data(tmp_path):
    """The boundary of the table: an image with no valid pixel is a finished, all-no-data mask."""
    data = np.full((1, 64, 64), np.nan, np.float32)
    src = write_geotiff(tmp_path / "nan.tif", data, nodata=float("nan"))
    result = CliRunner().invoke(main, [str(a) for a in ["run", src, "-o", tmp_path / "out.zarr", *STANDIN]])
    assert result.exit_code == 0, result.output
    store = tilepipe.open(str(tmp_path / "out.zarr"))
    assert store.is_complete and (store.mask[...] == 255).all()

