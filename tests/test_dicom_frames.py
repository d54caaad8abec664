"""Frame reading: each DICOM file parsed once per process, each frame read alone and decoded as
pydicom decodes the whole file.

The oracle is pydicom's own whole-file decode (``dcmread(path).pixel_array``), which shares none of
the frame reader's offset arithmetic. Encapsulated layouts the shared samples lack (a Basic Offset
Table over several fragments per frame, an Extended Offset Table, JPEG frames split into fragments
with no table at all) are made here from real compressed frames with pydicom's encapsulation
functions."""

from __future__ import annotations

import io
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pydicom.filereader
import pytest
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames

from tests.dicom_helpers import dicom_data
from tilepipe.errors import TilepipeError
from tilepipe.grid import Window
from tilepipe.sources import SourceSpec
from tilepipe.sources import dicom_frames
from tilepipe.sources.dicom import DicomSource
from tilepipe.sources.dicom_frames import READERS, FrameReader
from tilepipe.sources.dicom_pixels import decode_frame

ENHANCED = ("enhanced", "philips_mprage.dcm")
WSI_LEVEL_0 = ("wsi_cmu1", "level-0-frames-0-30.dcm")


def whole_file_frames(path) -> np.ndarray:
    """Every frame as pydicom decodes the whole file: (frames, rows, cols[, samples])."""
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array
    return frames if int(ds.get("NumberOfFrames") or 1) > 1 else frames[None]


@pytest.fixture(autouse=True)
def fresh_readers():
    READERS.clear()
    yield
    READERS.clear()


@pytest.mark.parametrize("parts", [
    ENHANCED,                                              # native, 176 frames, per-frame functional groups
    ("compressed", "emri_small_RLE.dcm"),                  # RLE, Basic Offset Table
    ("compressed", "emri_small_jpeg_2k_lossless.dcm"),     # JPEG 2000, no offset table, one fragment a frame
    ("multiframe", "examples_ybr_color.dcm"),              # YBR JPEG, comes out RGB
    WSI_LEVEL_0,                                           # whole-slide tiles, JPEG baseline
], ids=lambda parts: parts[-1])
def test_each_frame_equals_pydicoms_whole_file_decode(parts):
    path = dicom_data(*parts)
    expected = whole_file_frames(path)
    for index in range(len(expected)):
        frame = decode_frame(str(path), index)
        assert frame.dtype == expected.dtype
        assert np.array_equal(frame, expected[index]), f"frame {index}"


def rewrap(source, target, layout: str):
    """``source``'s compressed frames in another encapsulated layout, saved as ``target``."""
    ds = pydicom.dcmread(source)
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    if layout == "extended":
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    else:
        ds.PixelData = encapsulate(frames, fragments_per_frame=3, has_bot=layout == "basic")
    ds.save_as(target, enforce_file_format=True)
    return target


@pytest.mark.parametrize("source, layout", [
    (("compressed", "emri_small_RLE.dcm"), "basic"),        # a Basic Offset Table over 3 fragments a frame
    (("compressed", "emri_small_RLE.dcm"), "extended"),     # an Extended Offset Table
    (("multiframe", "examples_ybr_color.dcm"), "none"),     # 3 fragments a JPEG frame and no table
])
def test_every_encapsulated_layout_gives_the_same_frames(tmp_path, source, layout):
    original = dicom_data(*source)
    path = rewrap(original, tmp_path / f"{layout}.dcm", layout)
    expected = whole_file_frames(original)
    for index in range(len(expected)):
        assert np.array_equal(decode_frame(str(path), index), expected[index]), f"frame {index}"


def test_a_deflated_file_decodes_every_frame():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("image_dfl.dcm")  # ships with pydicom
    assert np.array_equal(decode_frame(path, 0), whole_file_frames(path)[0])


def counting_parses(monkeypatch, path) -> list[str]:
    """Every header parse of ``path`` from now on, by anyone: each one, ``dcmread`` or pydicom's
    ``pixel_array(path)``, starts by reading the preamble."""
    parses: list[str] = []
    real = pydicom.filereader.read_preamble

    def spy(file, *args, **kwargs):
        if Path(getattr(file, "name", "")).resolve() == Path(path).resolve():
            parses.append(file.name)
        return real(file, *args, **kwargs)

    monkeypatch.setattr(pydicom.filereader, "read_preamble", spy)
    return parses


def test_a_multiframe_file_is_parsed_once_for_all_its_frames(monkeypatch):
    path = dicom_data(*ENHANCED)
    parses = counting_parses(monkeypatch, path)
    for index in range(176):
        decode_frame(str(path), index)
    assert len(parses) == 1


def test_a_source_parses_its_file_twice_at_most_whatever_it_reads(monkeypatch):
    """Once to find the series (headers only), once for the frame reader: never once a frame."""
    path = dicom_data(*ENHANCED)
    parses = counting_parses(monkeypatch, path)
    source = DicomSource(SourceSpec(path=str(path)))
    for plane in range(source.depth):
        source.read(Window(0, 0, source.height, source.width), plane)
    assert source.depth == 176 and len(parses) <= 2


def test_threads_share_one_reader_and_read_the_frames_sequential_reads_give(monkeypatch):
    path = dicom_data(*WSI_LEVEL_0)
    expected = whole_file_frames(path)
    parses = counting_parses(monkeypatch, path)
    start = threading.Barrier(4)

    def read(index):
        if index < 4:
            start.wait()  # the first four reads ask for the file's reader all at once
        return decode_frame(str(path), index)

    with ThreadPoolExecutor(4) as pool:
        frames = list(pool.map(read, [k % 30 for k in range(60)]))
    assert len(parses) == 1
    for k, frame in enumerate(frames):
        assert np.array_equal(frame, expected[k % 30]), f"read {k}"


class CountingFile(io.FileIO):
    """A file that counts the bytes read through it after ``counting`` is set."""

    counting = False
    bytes_read = 0

    def read(self, size=-1):
        data = super().read(size)
        if CountingFile.counting:
            CountingFile.bytes_read += len(data)
        return data


@pytest.mark.parametrize("parts", [WSI_LEVEL_0, ENHANCED], ids=lambda parts: parts[-1])
def test_a_frame_read_reads_that_frames_bytes_and_no_more(monkeypatch, parts):
    path = dicom_data(*parts)
    ds = pydicom.dcmread(path)
    count = int(ds.NumberOfFrames)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        sizes = [len(f) for f in generate_frames(ds.PixelData, number_of_frames=count)]
    else:
        sizes = [len(ds.PixelData) // count] * count
    monkeypatch.setattr(dicom_frames, "open", lambda p, mode: CountingFile(p, "r"), raising=False)
    monkeypatch.setattr(CountingFile, "counting", False)
    reader = FrameReader(str(path))  # the header and the offset table: read once, not counted
    for index in (0, count // 2, count - 1):
        monkeypatch.setattr(CountingFile, "counting", True)
        monkeypatch.setattr(CountingFile, "bytes_read", 0)
        reader.frame(index)
        assert CountingFile.bytes_read == sizes[index], f"frame {index}"


def test_a_file_changed_on_disk_gets_a_new_reader(tmp_path):
    path = tmp_path / "image.dcm"
    shutil.copyfile(dicom_data("single", "MR_small.dcm"), path)
    assert np.array_equal(decode_frame(str(path), 0), whole_file_frames(path)[0])
    shutil.copyfile(dicom_data("single", "CT_small.dcm"), path)
    assert np.array_equal(decode_frame(str(path), 0), whole_file_frames(path)[0])


def test_a_frame_past_the_last_and_a_cut_fragment_are_clear_errors(tmp_path):
    path = dicom_data("compressed", "emri_small_RLE.dcm")
    with pytest.raises(TilepipeError, match=r"emri_small_RLE.dcm: no frame 11 \(the file has 10\)"):
        decode_frame(str(path), 10)
    cut = tmp_path / "cut.dcm"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) - 3000])
    with pytest.raises(TilepipeError, match="cut.dcm: the file looks truncated"):
        decode_frame(str(cut), 9)
