"""DICOM input end to end: series discovery and order, compressed syntaxes, multi-frame, whole-slide
levels read frame by frame, windowing, and bad inputs failing cleanly before any store exists.

Runs use the cheap stand-in model with random weights: these tests are about reading DICOM and the
geometry of the output, not about the network."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.fileset import FileSet
from pydicom.pixels import apply_rescale, pixel_array

import tilepipe
from tests.conftest import shared_file
from tests.dicom_helpers import dicom_data, read_positions, shuffled_copy, write_enhanced_with_positions
from tilepipe.cli import main
from tilepipe.errors import TilepipeError
from tilepipe.grid import Window
from tilepipe.sources import SourceSpec, open_source
from tilepipe.sources import dicom_pixels
from tilepipe.sources.dicom import DicomSource
from tilepipe.sources.dicom_frames import FrameReader
from tilepipe.sources.geotiff import GeoTiffSource
from tilepipe.testing import ct_phantom, write_ct_series, write_sr

STANDIN = {"model": "standin", "weights": "none"}


def run(path, out, **options):
    return tilepipe.run(str(path), str(out), **STANDIN, **options)


def mask_of(out) -> np.ndarray:
    store = tilepipe.open(out)
    assert store.is_complete
    return store.mask[...]


# --- a real series under shuffled names ---------------------------------------------------------

@pytest.fixture(scope="module")
def shuffled_series(tmp_path_factory):
    """series_mr_ge_epi under random names in sub-folders, with a non-DICOM file beside it, run once."""
    original = dicom_data("series_mr_ge_epi")
    folder = tmp_path_factory.mktemp("shuffled") / "series"
    shuffled_copy(original, folder)
    (folder / "README.txt").write_text("not DICOM")
    out = folder.parent / "mask.zarr"
    summary = run(folder, out)
    return folder, out, summary, sorted(original.iterdir())


def test_shuffled_series_follows_image_position_and_keeps_its_attributes(shuffled_series):
    folder, out, summary, originals = shuffled_series
    store = tilepipe.open(out)
    assert store.is_complete and store.mask.shape == (15, 64, 64)
    d = store.group.attrs["dicom"]
    positions = read_positions(originals)
    uids = d["sop_instance_uids"]
    assert sorted(uids) == sorted(positions)
    z = [positions[u][2] for u in uids]
    assert z == sorted(z) and z[0] == pytest.approx(-17.6875) and z[-1] == pytest.approx(52.3125)
    assert d["slice_positions"] == [list(positions[u]) for u in uids]
    instance_numbers = {str(ds.SOPInstanceUID): int(ds.InstanceNumber)
                        for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in originals)}
    assert [instance_numbers[u] for u in uids] == list(range(1, 16))  # this series' numbers follow position
    first = pydicom.dcmread(originals[0], stop_before_pixels=True)
    assert (d["study_instance_uid"], d["series_instance_uid"], d["frame_of_reference_uid"]) == (
        first.StudyInstanceUID, first.SeriesInstanceUID, first.FrameOfReferenceUID)
    assert d["modality"] == "MR" and d["pixel_spacing"] == [3.75, 3.75]
    assert np.allclose(d["image_orientation_patient"], [1, 0, 0, 0, 1, 0])
    assert d["slice_spacing"] == pytest.approx(5.0) and np.allclose(d["slice_spacings"], 5.0)
    assert np.allclose(store.group["z"][...], d["slice_locations"])
    assert d["window"]["source"] == "from the file" and d["scaling"]["method"].startswith("window ")
    assert np.allclose(np.asarray(d["affine"]) @ (14, 0, 0, 1), (*positions[uids[-1]], 1))
    assert summary["input"]["skipped_non_dicom"] == 1 and summary["input"]["slice_count"] == 15


def test_each_plane_holds_the_file_at_that_position(shuffled_series):
    folder, out, _, _ = shuffled_series
    d = tilepipe.open(out).group.attrs["dicom"]
    source = open_source(SourceSpec(path=str(folder)))
    for z in (0, 7, 14):
        pixels, valid = source.read(Window(-3, -3, 70, 70), z)
        expected = pixel_array(d["source_files"][z])
        assert np.array_equal(pixels[0, 3:67, 3:67], expected) and valid[3:67, 3:67].all()
        assert not valid[:3].any() and not pixels[0, :3].any()  # boundless: outside is zero, invalid


def test_reads_from_many_threads_match_sequential_reads(shuffled_series):
    folder = shuffled_series[0]
    source = DicomSource(SourceSpec(path=str(folder)))
    expected = [source.read(Window(0, 0, 64, 64), z)[0] for z in range(15)]
    got: dict[int, np.ndarray] = {}

    def read(z):
        got[z] = source.read(Window(0, 0, 64, 64), z)[0]

    threads = [threading.Thread(target=read, args=(z,)) for z in range(15)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(got[z], expected[z]) for z in range(15))


def test_a_dicomdir_opens_the_series_it_indexes(tmp_path, shuffled_series):
    fileset = FileSet()
    for f in sorted(dicom_data("series_mr_ge_epi").iterdir()):
        fileset.add(f)
    fileset.write(tmp_path / "media")
    via_dicomdir = open_source(SourceSpec(path=str(tmp_path / "media" / "DICOMDIR")))
    via_folder = open_source(SourceSpec(path=str(shuffled_series[0])))
    assert via_dicomdir.depth == 15
    assert (via_dicomdir.geometry()["dicom"]["sop_instance_uids"]
            == via_folder.geometry()["dicom"]["sop_instance_uids"])


def test_dispatch_by_folder_preamble_or_extension(tmp_path):
    dcm = dicom_data("single", "MR_small.dcm")
    no_extension = Path(shutil.copyfile(dcm, tmp_path / "IM0001"))
    assert isinstance(open_source(SourceSpec(path=str(no_extension))), DicomSource)
    assert isinstance(open_source(SourceSpec(path=str(shared_file("geotiff", "rmnp-rgb.tif")))), GeoTiffSource)


# --- compressed syntaxes, multi-frame ----------------------------------------------------------

COMPRESSED = ["JPGExtended.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
              "SC_rgb_jpeg_dcmtk.dcm", "emri_small_RLE.dcm", "emri_small_jpeg_2k_lossless.dcm"]


@pytest.mark.parametrize("name", COMPRESSED)
def test_every_compressed_file_decodes_and_runs(name, tmp_path):
    path = dicom_data("compressed", name)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    summary = run(path, tmp_path / "mask.zarr")
    mask = mask_of(tmp_path / "mask.zarr")
    assert mask.shape == (int(header.get("NumberOfFrames") or 1), header.Rows, header.Columns)
    assert (mask != 255).all()
    assert summary["input"]["transfer_syntax"] == header.file_meta.TransferSyntaxUID.name


def test_mr_small_compressed_variants_match_the_uncompressed_file(tmp_path):
    reference_path = dicom_data("single", "MR_small.dcm")
    run(reference_path, tmp_path / "reference.zarr")
    reference = mask_of(tmp_path / "reference.zarr")
    reference_pixels = open_source(SourceSpec(path=str(reference_path))).read(Window(0, 0, 64, 64), 0)[0]
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        path = dicom_data("compressed", name)
        run(path, tmp_path / f"{name}.zarr")
        assert np.array_equal(mask_of(tmp_path / f"{name}.zarr"), reference), name
        pixels = open_source(SourceSpec(path=str(path))).read(Window(0, 0, 64, 64), 0)[0]
        assert np.array_equal(pixels, reference_pixels)


def test_a_syntax_without_decoder_names_it_and_what_to_install(monkeypatch):
    path = str(dicom_data("compressed", "MR_small_jp2klossless.dcm"))

    class Unavailable:
        is_available = False
        missing_dependencies = ["pylibjpeg-openjpeg"]

    monkeypatch.setattr(dicom_pixels, "get_decoder", lambda syntax: Unavailable())
    with pytest.raises(TilepipeError, match=r"jp2klossless.dcm: transfer syntax JPEG 2000 Image Compression "
                                            r"\(Lossless Only\) needs a decoder plugin; install it with: "
                                            r"pip install pylibjpeg pylibjpeg-openjpeg"):
        DicomSource(SourceSpec(path=path))

    def unsupported(syntax):
        raise NotImplementedError(syntax)

    monkeypatch.setattr(dicom_pixels, "get_decoder", unsupported)
    with pytest.raises(TilepipeError, match="has no pydicom decoder"):
        DicomSource(SourceSpec(path=path))


def test_a_deflated_file_is_inflated_to_decode():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("image_dfl.dcm")  # ships with pydicom
    source = open_source(SourceSpec(path=path))
    pixels, _ = source.read(Window(0, 0, source.height, source.width), 0)
    ds = pydicom.dcmread(path)
    assert np.array_equal(pixels[0], apply_rescale(ds.pixel_array, ds))


def test_ybr_jpeg_frames_come_out_as_rgb():
    source = open_source(SourceSpec(path=str(dicom_data("multiframe", "examples_ybr_color.dcm"))))
    assert source.depth == 30 and source.bands == (1, 2, 3) and source.dtype == np.uint8
    pixels, _ = source.read(Window(0, 0, 240, 320), 7)
    assert np.array_equal(pixels, np.moveaxis(pixel_array(source.path, index=7), -1, 0))  # pydicom's RGB
    assert source.scaling.method == "dtype"


def test_enhanced_mr_is_a_ten_slice_volume(tmp_path):
    path = dicom_data("multiframe", "emri_small.dcm")
    summary = run(path, tmp_path / "mask.zarr")
    assert mask_of(tmp_path / "mask.zarr").shape == (10, 64, 64)
    d = tilepipe.open(tmp_path / "mask.zarr").group.attrs["dicom"]
    assert d["frame_numbers"] == list(range(1, 11)) and set(d["source_files"]) == {str(path)}
    assert any("no ImagePositionPatient" in w for w in summary["input"]["warnings"])


def test_enhanced_functional_groups_order_and_calibrate_frames(tmp_path):
    source_path = dicom_data("multiframe", "emri_small.dcm")
    path = write_enhanced_with_positions(source_path, tmp_path / "enhanced.dcm", slope=2.0, intercept=-10.0)
    source = open_source(SourceSpec(path=str(path)))
    d = source.geometry()["dicom"]
    assert d["frame_numbers"] == list(range(10, 0, -1))  # frame 10 is the lowest slice
    assert d["pixel_spacing"] == [0.9, 0.9] and d["slice_spacing"] == pytest.approx(1.2)
    pixels, _ = source.read(Window(0, 0, 64, 64), 0)
    assert np.array_equal(pixels[0], pixel_array(source_path, index=9) * 2.0 - 10.0)


# --- whole-slide -------------------------------------------------------------------------------

def test_whole_slide_level_0_is_read_frame_by_frame(tmp_path, monkeypatch):
    folder = dicom_data("wsi_cmu1")
    level0 = pydicom.dcmread(folder / "level-0-frames-0-30.dcm", stop_before_pixels=True)
    asked: list[int] = []
    real = FrameReader.frame

    def spy(reader, index):
        asked.append(index)
        return real(reader, index)

    monkeypatch.setattr(FrameReader, "frame", spy)  # frame by frame; that a frame reads only its bytes: test_dicom_frames
    source = DicomSource(SourceSpec(path=str(folder)))
    assert (source.height, source.width) == (level0.TotalPixelMatrixRows, level0.TotalPixelMatrixColumns)
    assert source.depth is None  # one 2-D plane: the mask is (y, x)
    asked.clear()
    source.read(Window(980, 980, 40, 40))  # the corner where frames 6, 7, 11 and 12 meet (5 frames across)
    assert sorted(asked) == [6, 7, 11, 12]
    asked.clear()
    run(folder, tmp_path / "slide.zarr", block_size=1024, chunk_size=512)
    mask = mask_of(tmp_path / "slide.zarr")
    assert mask.shape == (2967, 2220) and (mask != 255).all()
    assert set(asked) == set(range(30))  # every frame once or more, one at a time
    assert len(asked) < 3 * 30


def test_level_picks_a_smaller_level_and_a_bad_level_is_refused():
    folder = dicom_data("wsi_cmu1")
    level1 = pydicom.dcmread(folder / "level-1-frames-0-9.dcm", stop_before_pixels=True)
    source = open_source(SourceSpec(path=str(folder), level=1))
    assert (source.height, source.width) == (level1.TotalPixelMatrixRows, level1.TotalPixelMatrixColumns)
    assert source.geometry()["dicom"]["sop_instance_uids"] == [level1.SOPInstanceUID]
    level3 = folder / "level-3-frames-0-1.dcm"  # one 370 x 277 frame, unlike the files sorted before it
    source = open_source(SourceSpec(path=str(folder), level=3))
    pixels, valid = source.read(Window(0, 0, 400, 300))
    assert np.array_equal(pixels[:, :370, :277], np.moveaxis(pixel_array(level3, index=0), -1, 0))
    assert valid[:370, :277].all() and not valid[370:].any() and not valid[:, 277:].any()
    with pytest.raises(TilepipeError, match=r"--level 12: the slide has 12 level\(s\)"):
        open_source(SourceSpec(path=str(folder), level=12))
    with pytest.raises(TilepipeError, match="not a whole-slide image"):
        open_source(SourceSpec(path=str(dicom_data("single", "MR_small.dcm")), level=1))


# --- intensities --------------------------------------------------------------------------------

def test_rescale_window_presets_and_file_window(tmp_path):
    write_ct_series(tmp_path / "ct", 3, window=(40, 400))
    path = str(tmp_path / "ct")
    default = open_source(SourceSpec(path=path))
    pixels, _ = default.read(Window(0, 0, 64, 64), 1)
    assert np.array_equal(pixels[0], ct_phantom(64, 2.5))  # RescaleIntercept -1024 applied: HU
    assert (default.scaling.low, default.scaling.high) == ((-160.0,), (240.0,))
    lung = open_source(SourceSpec(path=path, window="lung"))
    assert lung.scaling.method == "window -600,1500 (lung)"
    assert (lung.scaling.low, lung.scaling.high) == ((-1350.0,), (150.0,))
    given = open_source(SourceSpec(path=path, window="50,350"))
    assert given.geometry()["dicom"]["window"] == {"center": 50.0, "width": 350.0, "source": "given"}
    with pytest.raises(TilepipeError, match="--window 'wide'"):
        open_source(SourceSpec(path=path, window="wide"))


def test_without_a_file_window_percentiles_are_used(tmp_path):
    write_ct_series(tmp_path / "ct", 3, window=None)
    source = open_source(SourceSpec(path=str(tmp_path / "ct")))
    assert source.scaling.method == "percentile 2-98" and source.geometry()["dicom"]["window"] is None


def test_monochrome1_is_shown_as_a_viewer_shows_it(tmp_path):
    """A viewer applies the window to the file's values, then inverts MONOCHROME1; the network sees the same."""
    write_ct_series(tmp_path / "m1", 2, photometric="MONOCHROME1", window=(40, 400))
    source = open_source(SourceSpec(path=str(tmp_path / "m1")))
    pixels, _ = source.read(Window(0, 0, 64, 64), 0)
    hu = ct_phantom(64, 0.0)
    assert np.array_equal(pixels[0], 2047.0 - hu)  # mirrored within the 12-bit range rescaled by -1024
    shown = source.scaling.apply(pixels)[0]
    assert np.allclose(shown, 1 - np.clip((hu - (40 - 200)) / 400, 0, 1), atol=1e-6)


# --- bad input ----------------------------------------------------------------------------------

def cli_run(*args: str):
    return CliRunner().invoke(main, ["run", *map(str, args), "--model", "standin", "--weights", "none", "-q"])


def assert_clean_error(result, *needles: str) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0]
    return errors[0]


def test_a_folder_without_dicom_is_a_clear_error(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = cli_run(folder, "-o", tmp_path / "out.zarr")
    assert_clean_error(result, str(folder), "no DICOM image found", "2 not DICOM")
    assert not (tmp_path / "out.zarr").exists()


def test_two_series_need_series_and_never_a_guess(tmp_path):
    folder = tmp_path / "two"
    shuffled_copy(dicom_data("series_mr_ge_epi"), folder / "mr")
    write_ct_series(folder / "ct", 4, series_uid="1.2.3.4.5")
    mr_uid = pydicom.dcmread(next(dicom_data("series_mr_ge_epi").iterdir()), stop_before_pixels=True).SeriesInstanceUID
    result = cli_run(folder, "-o", tmp_path / "out.zarr")
    assert_clean_error(result, str(folder), "2 series", "--series", "1.2.3.4.5", str(mr_uid), "15 file(s)", "4 file(s)")
    assert not (tmp_path / "out.zarr").exists()
    ok = cli_run(folder, "-o", tmp_path / "out.zarr", "--series", "1.2.3.4.5")
    assert ok.exit_code == 0, ok.output
    assert tilepipe.open(tmp_path / "out.zarr").mask.shape == (4, 64, 64)


def test_a_missing_slice_is_a_warning_and_the_positions_show_the_gap(tmp_path):
    folder = tmp_path / "gap"
    folder.mkdir()
    for f in dicom_data("series_mr_ge_epi").iterdir():
        if not f.name.endswith("-00008.dcm"):
            shutil.copyfile(f, folder / f.name)
    summary = run(folder, tmp_path / "out.zarr")
    store = tilepipe.open(tmp_path / "out.zarr")
    assert store.is_complete and store.mask.shape == (14, 64, 64)
    [warning] = [w for w in summary["input"]["warnings"] if "slice(s) missing" in w]
    assert "about 1 slice(s) missing" in warning and "step 10 mm" in warning
    d = store.group.attrs["dicom"]
    assert d["warnings"] == summary["input"]["warnings"]
    assert sorted(d["slice_spacings"])[-1] == pytest.approx(10.0)


@pytest.mark.parametrize("name", ["series", "encapsulated"])
def test_a_truncated_file_is_an_error_before_any_output(tmp_path, name):
    if name == "series":
        folder = tmp_path / "series"
        shutil.copytree(dicom_data("series_mr_ge_epi"), folder)
        victim = folder / "axial_epi_fmri_interleaved_i_to_s-00005.dcm"
        target = folder
    else:
        victim = target = Path(shutil.copyfile(dicom_data("compressed", "MR_small_RLE.dcm"), tmp_path / "rle.dcm"))
    victim.chmod(0o644)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 2000])
    result = cli_run(target, "-o", tmp_path / "out.zarr")
    assert_clean_error(result, str(victim), "truncated")
    assert not (tmp_path / "out.zarr").exists()


def test_a_header_cut_before_the_pixels_is_an_error(tmp_path):
    victim = tmp_path / "cut.dcm"
    victim.write_bytes(dicom_data("single", "CT_small.dcm").read_bytes()[:1500])
    with pytest.raises(TilepipeError, match="cut.dcm: .*truncated|cut.dcm: unreadable"):
        open_source(SourceSpec(path=str(victim)))


def test_a_dicom_without_pixel_data_is_an_error_alone_and_skipped_beside_a_series(tmp_path):
    sr = write_sr(tmp_path / "report.dcm")
    result = cli_run(sr, "-o", tmp_path / "out.zarr")
    assert_clean_error(result, str(sr), "no pixel data", "Comprehensive SR Storage")
    assert not (tmp_path / "out.zarr").exists()
    folder = tmp_path / "with_sr"
    write_ct_series(folder, 3)
    write_sr(folder / "report.dcm")
    assert open_source(SourceSpec(path=str(folder))).describe()["skipped_non_image_dicom"] == 1


def test_stacks_that_cannot_be_one_volume_are_refused(tmp_path):
    mixed = tmp_path / "mixed"
    write_ct_series(mixed / "axial", 3, series_uid="1.2.3.9")
    write_ct_series(mixed / "coronal", 3, series_uid="1.2.3.9", orientation=(1, 0, 0, 0, 0, -1))
    with pytest.raises(TilepipeError, match="mixes 2 slice orientations"):
        open_source(SourceSpec(path=str(mixed)))
    duplicate = tmp_path / "duplicate"
    write_ct_series(duplicate / "a", 3, series_uid="1.2.3.8")
    write_ct_series(duplicate / "b", 3, series_uid="1.2.3.8")
    with pytest.raises(TilepipeError, match="the same slice position"):
        open_source(SourceSpec(path=str(duplicate)))
    sizes = tmp_path / "sizes"
    write_ct_series(sizes / "a", 2, series_uid="1.2.3.7")
    write_ct_series(sizes / "b", 2, size=32, series_uid="1.2.3.7")
    with pytest.raises(TilepipeError, match="rows x columns"):
        open_source(SourceSpec(path=str(sizes)))
