"""4-D DICOM: several frames per position become a (volume, z, y, x) mask whose volumes are
labelled, ``--select`` keeps one, and positions that repeat for no stated reason stay an error.

Oracles come from the headers (read with pydicom here) and from runs of each volume's frames on
their own: a 4-D run must give every volume exactly the mask a run of that volume alone gives.
Stand-in model and fixed scaling (so separate runs scale alike): these tests are about grouping
frames and addressing planes, not about the network."""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

import tilepipe
from tests.dicom_helpers import dicom_data, write_enhanced_temporal
from tilepipe.cli import main
from tilepipe.errors import TilepipeError
from tilepipe.exporters import export
from tilepipe.sources import SourceSpec, open_source
from tilepipe.sources.dicom_volumes import split_volumes
from tilepipe.testing import write_ct_series

STANDIN = {"model": "standin", "weights": "none", "scaling": "0,2000"}


def run(path, out, **options):
    summary = tilepipe.run(str(path), str(out), **STANDIN, **options)
    store = tilepipe.open(out)
    assert store.is_complete
    return store, summary


def cli(*args) -> object:
    return CliRunner().invoke(main, ["run", *map(str, args), "--model", "standin", "--weights", "none",
                                     "--scaling", "0,2000", "-q"])


def copy_files(paths, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for p in paths:
        shutil.copyfile(p, folder / Path(p).name)
    return folder


@pytest.fixture(scope="module")
def multi_echo(tmp_path_factory):
    """Four positions, two echoes each, in one series folder; and one run of it."""
    root = tmp_path_factory.mktemp("echo")
    paths = write_ct_series(root / "series", 4, echoes=2)
    store, summary = run(root / "series", root / "mask.zarr")
    return root, paths, store, summary


def test_a_multi_echo_series_is_a_labelled_volume_per_echo(multi_echo):
    root, paths, store, summary = multi_echo
    assert store.mask.shape == (2, 4, 64, 64)
    d = store.group.attrs["dicom"]
    echo = {}
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        echo[str(ds.SOPInstanceUID)] = (int(ds.EchoNumbers), [float(v) for v in ds.ImagePositionPatient], p)
    assert [v["labels"]["EchoNumbers"] for v in d["volumes"]] == [1, 2]
    for v, volume in enumerate(d["volumes"]):
        uids = d["sop_instance_uids"][v * 4:(v + 1) * 4]
        assert {echo[u][0] for u in uids} == {v + 1}
        assert volume["slice_positions"] == [echo[u][1] for u in uids]
        z = [pos[2] for pos in volume["slice_positions"]]
        assert z == sorted(z)
        alone, _ = run(copy_files([echo[u][2] for u in uids], root / f"echo{v + 1}"), root / f"echo{v + 1}.zarr")
        assert np.array_equal(store.mask[v], alone.mask[...])
    assert not np.array_equal(store.mask[0], store.mask[1])  # the echoes differ, so do their masks
    assert summary["output"]["mask_shape"] == [2, 4, 64, 64]
    assert "2 volumes" in summary["input"]["layout"] and "EchoNumbers 2" in summary["input"]["layout"]
    assert d["affine"] is not None


def test_select_keeps_one_echo(multi_echo, tmp_path):
    root, _, store, _ = multi_echo
    result = cli(root / "series", "-o", tmp_path / "echo2.zarr", "--select", "EchoNumbers=2")
    assert result.exit_code == 0, result.output
    kept = tilepipe.open(tmp_path / "echo2.zarr")
    assert kept.mask.shape == (4, 64, 64) and np.array_equal(kept.mask[...], store.mask[1])
    assert "volumes" not in kept.group.attrs["dicom"]


def test_the_real_diffusion_pair_is_two_volumes_of_one_slice(tmp_path):
    folder = dicom_data("four_d_dwi")
    store, _ = run(folder, tmp_path / "dwi.zarr")
    assert store.mask.shape == (2, 1, 896, 896)
    d = store.group.attrs["dicom"]
    acquisition = {str(ds.SOPInstanceUID): int(ds.AcquisitionNumber)
                   for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir()))}
    assert [acquisition[u] for u in d["sop_instance_uids"]] == [1, 2]
    assert [v["labels"] for v in d["volumes"]] == [{"DiffusionBValue": 0, "AcquisitionNumber": 1},
                                                  {"DiffusionBValue": 1000, "AcquisitionNumber": 2}]
    result = cli(folder, "-o", tmp_path / "b1000.zarr", "--select", "AcquisitionNumber=2")
    assert result.exit_code == 0, result.output
    b1000 = tilepipe.open(tmp_path / "b1000.zarr")
    assert b1000.mask.shape == (1, 896, 896) and np.array_equal(b1000.mask[...], store.mask[1])
    assert b1000.group.attrs["dicom"]["sop_instance_uids"] == d["sop_instance_uids"][1:]


def test_an_enhanced_image_with_two_temporal_positions(tmp_path):
    path = write_enhanced_temporal(dicom_data("multiframe", "emri_small.dcm"), tmp_path / "temporal.dcm")
    store, _ = run(path, tmp_path / "mask.zarr", probabilities=True)
    assert store.mask.shape == (2, 5, 64, 64)
    assert store.probabilities.shape[:2] == (2, 5) and store.probabilities.shape[3:] == (64, 64)
    d = store.group.attrs["dicom"]
    frames = pydicom.dcmread(path, stop_before_pixels=True).PerFrameFunctionalGroupsSequence
    time = [int(f.FrameContentSequence[0].TemporalPositionIndex) for f in frames]
    assert [v["labels"] for v in d["volumes"]] == [{"TemporalPositionIndex": 1}, {"TemporalPositionIndex": 2}]
    for v in range(2):
        numbers = d["frame_numbers"][v * 5:(v + 1) * 5]
        assert {time[n - 1] for n in numbers} == {v + 1}
        assert d["volumes"][v]["slice_positions"] == [
            [float(x) for x in frames[n - 1].PlanePositionSequence[0].ImagePositionPatient] for n in numbers]
    kept, _ = run(path, tmp_path / "t2.zarr", select="TemporalPositionIndex=2", probabilities=True)
    assert kept.mask.shape == (5, 64, 64) and np.array_equal(kept.mask[...], store.mask[1])
    assert np.array_equal(kept.probabilities[...], store.probabilities[1])  # each plane's own, in its place
    written = export(str(tmp_path / "mask.zarr"), "dicom-seg", str(tmp_path / "seg.dcm")).split("\n")
    assert written == [str(tmp_path / "seg_volume0.dcm"), str(tmp_path / "seg_volume1.dcm")]
    for v, seg_path in enumerate(written):
        seg = hd.seg.segread(seg_path)
        positions = {tuple(float(x) for x in f.PlanePositionSequence[0].ImagePositionPatient)
                     for f in seg.PerFrameFunctionalGroupsSequence}
        assert positions <= {tuple(p) for p in d["volumes"][v]["slice_positions"]}


def test_seg_export_of_a_4d_series_writes_one_seg_per_volume(multi_echo, tmp_path):
    root, _, store, _ = multi_echo
    written = export(str(root / "mask.zarr"), "dicom-seg", str(tmp_path / "seg.dcm")).split("\n")
    d = store.group.attrs["dicom"]
    for v, seg_path in enumerate(written):
        seg = hd.seg.segread(seg_path)
        labels = seg.get_pixels_by_source_instance(d["sop_instance_uids"][v * 4:(v + 1) * 4], combine_segments=True)
        lut = np.full(256, 255, np.uint8)
        for item in seg.SegmentSequence:
            lut[int(item.SegmentNumber)] = int(item.TrackingID.rsplit(" ", 1)[1])
        assert np.array_equal(lut[labels], store.mask[v])
        assert f"EchoNumbers {v + 1}" in seg.SeriesDescription


def test_repeated_positions_with_nothing_to_tell_them_apart_are_refused(tmp_path):
    write_ct_series(tmp_path / "twice" / "a", 3, series_uid="1.2.3.8")
    write_ct_series(tmp_path / "twice" / "b", 3, series_uid="1.2.3.8")
    result = cli(tmp_path / "twice", "-o", tmp_path / "out.zarr")
    assert result.exit_code != 0 and "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert "the same slice position" in line and "no attribute tells them apart" in line
    assert str(tmp_path / "twice" / "a") in line and str(tmp_path / "twice" / "b") in line
    assert not (tmp_path / "out.zarr").exists()


def test_volumes_of_different_slice_counts_are_refused_with_the_way_out(tmp_path):
    paths = write_ct_series(tmp_path / "series", 4, echoes=2)
    second_echo = [p for p in paths if int(pydicom.dcmread(p, stop_before_pixels=True).EchoNumbers) == 2]
    second_echo[0].unlink()
    result = cli(tmp_path / "series", "-o", tmp_path / "out.zarr")
    assert result.exit_code != 0 and "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert "volumes by EchoNumbers" in line and "4 (EchoNumbers 1" in line and "3 (EchoNumbers 2" in line
    assert "--select EchoNumbers=1" in line and not (tmp_path / "out.zarr").exists()
    assert cli(tmp_path / "series", "-o", tmp_path / "out.zarr", "--select", "EchoNumbers=2").exit_code == 0
    assert tilepipe.open(tmp_path / "out.zarr").mask.shape == (3, 64, 64)


@pytest.mark.parametrize("select, message", [
    ("EchoNumbers=3", "no frame of .* has EchoNumbers 3 \\(values there: 1, 2\\)"),
    ("StackID=1", "no frame of .* has StackID; its frames have EchoNumbers, EchoTime"),
    ("EchoNumbers", "expected KEY=VALUE"),
])
def test_select_that_matches_nothing_is_refused(multi_echo, select, message):
    root = multi_echo[0]
    with pytest.raises(TilepipeError, match=message):
        open_source(SourceSpec(path=str(root / "series"), select=select))


def test_an_attribute_that_changes_with_every_slice_is_passed_over():
    """Some scanners number each slice as its own acquisition: grouping by AcquisitionNumber would
    put both echoes of a slice into one volume, so the echo must be chosen even though it is
    tried later."""
    labels = [{"AcquisitionNumber": k, "EchoNumbers": e} for k in range(3) for e in (1, 2)]
    locations = [2.0 * k for k in range(3) for _ in (1, 2)]
    split = split_volumes(labels, locations)
    assert split.keys == ("EchoNumbers",)
    assert split.members == ((0, 2, 4), (1, 3, 5))
    assert split.labels == ({"EchoNumbers": 1}, {"EchoNumbers": 2})
    assert split_volumes([{"AcquisitionNumber": 1}] * 2, [0.0, 0.0]) is None
