"""Frames of one DICOM file, read by index without parsing the file again.

pydicom's ``pixel_array(path, index=i)`` parses the header on every call, and a multi-frame header
can be large: an Enhanced MR holds one functional-groups item per frame (176 frames: 0.1 s a
parse), a whole-slide level has thousands of frames. A :class:`FrameReader` parses the header once,
locates every frame once (native data by arithmetic, left to pydicom; encapsulated data by one walk
over the fragment item headers, grouped into frames by the Extended or Basic Offset Table), and then
reads only the bytes of the frame asked for. Decoding stays per frame, in pydicom's decoder for the
transfer syntax with the options ``pixel_array`` would use, so a frame decodes exactly as
``pixel_array(path, index=i)`` decodes it (YBR as RGB).

Readers are shared by the threads of a process through :data:`READERS`, keyed by path, size and
modification time (a file replaced on disk gets a new reader). A reader holds one open file: each
read seeks and reads under the reader's lock (bytes only, never a decode), so threads decode
different frames in parallel. The cache holds open files and offset tables, never pixels; a reader
evicted while a thread still reads through it stays open until that read ends.
"""

from __future__ import annotations

import os
import struct
import threading
import weakref
from collections import OrderedDict
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.encaps import encapsulate, parse_basic_offsets
from pydicom.pixels import as_pixel_options, get_decoder
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from ..errors import TilepipeError
from .dicom_header import PIXEL_KEYWORDS

ITEM, SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF


def fragment_items(f: BinaryIO, position: int, size: int, path: str) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, lengths)`` of the values of the items from ``position`` up to the sequence
    delimiter, from their 8-byte headers alone; an item or a delimiter past ``size`` (the file's
    length) means the file was cut short."""
    offsets, lengths = [], []
    while True:
        f.seek(position)
        head = f.read(8)
        if len(head) < 8:
            raise truncated(path, "its compressed pixel data ends before the sequence delimiter")
        group, element, length = struct.unpack("<HHL", head)
        tag = group << 16 | element
        if tag == SEQUENCE_END:
            return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)
        if tag != ITEM or length == UNDEFINED_LENGTH:
            raise TilepipeError(f"{path}: corrupt compressed pixel data (tag ({group:04X},{element:04X}) "
                                f"where a fragment item should be)")
        offsets.append(position + 8)
        lengths.append(length)
        position += 8 + length
        if position > size:
            raise truncated(path, "a compressed fragment runs past the end of the file")


def truncated(path: str, why: str) -> TilepipeError:
    return TilepipeError(f"{path}: the file looks truncated ({why})")


class _View:
    """A file-like over the reader's file with its own position, for pydicom's native frame reads:
    each ``read`` seeks and reads under the reader's lock, so no thread moves another's position."""

    def __init__(self, file: BinaryIO, lock: threading.Lock, position: int):
        self._file, self._lock, self._position = file, lock, position

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence not in (os.SEEK_SET, os.SEEK_CUR):
            raise ValueError("a frame view seeks from its start or its position only")
        self._position = offset if whence == os.SEEK_SET else self._position + offset
        return self._position

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            self._file.seek(self._position)
            data = self._file.read(size)
        self._position += len(data)
        return data


class FrameReader:
    """One DICOM file's frames, decoded one at a time: ``frame(i)`` equals ``pixel_array(path, index=i)``."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        file = open(path, "rb")
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
            syntax = UID(ds.file_meta.TransferSyntaxUID)
            self._decoder = get_decoder(syntax)
            self._dataset = None
            self._frames: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
            if syntax == DeflatedExplicitVRLittleEndian:
                # offsets in a deflated file point into the inflated stream: keep it inflated (such files are small)
                file.close()
                self._dataset = pydicom.dcmread(path)
                self._options = as_pixel_options(self._dataset)
                self.frame_count = self._options["number_of_frames"]
                return
            self._options = {**as_pixel_options(ds), "transfer_syntax_uid": syntax,
                             **self._element(file, syntax)}
            del ds  # an enhanced header is megabytes of functional groups: keep only what decoding needs
            self.frame_count = self._options["number_of_frames"]
            if syntax.is_encapsulated:
                self._frames = self._frame_table(file)
        except BaseException:
            file.close()
            raise
        self._file = file
        weakref.finalize(self, file.close)

    def _element(self, file: BinaryIO, syntax: UID) -> dict:
        """The pixel data element at the file's position: its keyword, VR and where its value starts."""
        endian = "<" if syntax.is_little_endian else ">"
        header = file.read(8 if syntax.is_implicit_VR else 12)
        if len(header) < 8:
            raise truncated(self.path, "its pixel data element is cut off")
        group, element = struct.unpack(endian + "HH", header[:4])
        keyword = PIXEL_KEYWORDS.get(group << 16 | element)
        if keyword is None:
            raise TilepipeError(f"{self.path}: no pixel data where the header ends")
        self._value_at = file.tell()
        element = {"pixel_keyword": keyword}
        if not syntax.is_implicit_VR:
            element["pixel_vr"] = header[4:6].decode("latin-1")
        return element

    def _frame_table(self, file: BinaryIO) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(data offsets, lengths, first fragment of each frame and one past the last)``: the
        fragments of frame ``i`` are ``first[i]:first[i + 1]``. None when only the codestreams can
        tell where frames end (several JPEG frames in more fragments, no offset table): pydicom
        then finds the frame itself."""
        file.seek(self._value_at)
        try:
            basic = parse_basic_offsets(file)
        except (ValueError, struct.error):
            raise TilepipeError(f"{self.path}: corrupt compressed pixel data (no Basic Offset Table item)") from None
        first_item = file.tell()
        extended = self._options.pop("extended_offsets", None)
        count = self.frame_count
        if extended:
            offsets, lengths = (np.frombuffer(v, "<u8").astype(np.int64) if isinstance(v, bytes)
                                else np.asarray(v, np.int64) for v in extended)
            return first_item + offsets[:count] + 8, lengths[:count], np.arange(count + 1)
        offsets, lengths = fragment_items(file, first_item, os.fstat(file.fileno()).st_size, self.path)
        if len(offsets) < count:
            raise truncated(self.path, f"it has {len(offsets)} compressed fragment(s) for {count} frames")
        if basic:
            # offsets count from the first fragment's item tag, 8 bytes before its value
            starts = np.searchsorted(offsets - 8 - first_item, np.asarray(basic[:count], np.int64))
            return offsets, lengths, np.append(starts, len(offsets))
        if len(offsets) == count:
            return offsets, lengths, np.arange(count + 1)
        if count == 1:
            return offsets, lengths, np.array([0, len(offsets)])
        return None

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based): (rows, cols) or (rows, cols, samples), YBR as RGB."""
        if not 0 <= index < self.frame_count:
            raise TilepipeError(f"{self.path}: no frame {index + 1} (the file has {self.frame_count})")
        if self._dataset is not None:
            return self._decoder.as_array(self._dataset, index=index, **self._options)[0]
        if self._frames is None:
            source = _View(self._file, self._lock, self._value_at)  # pydicom seeks frame `index` itself
            return self._decoder.as_array(source, index=index, **self._options)[0]
        offsets, lengths, first = self._frames
        with self._lock:
            parts = []
            for k in range(first[index], first[index + 1]):
                self._file.seek(int(offsets[k]))
                parts.append(self._file.read(int(lengths[k])))
        data = b"".join(parts)
        if len(data) < lengths[first[index]:first[index + 1]].sum():
            raise truncated(self.path, f"frame {index + 1} runs past the end of the file")
        single = {**self._options, "number_of_frames": 1}
        return self._decoder.as_array(encapsulate([data], has_bot=False), index=0, **single)[0]


class ReaderCache:
    """The few most recently used :class:`FrameReader` of a process, one per file version.

    A reader is built under the cache's lock, so two threads asking for the same new file parse it
    once; building is a header parse and a walk over fragment headers, never a decode."""

    def __init__(self, max_readers: int = 16):
        self.max_readers = max_readers
        self._readers: OrderedDict[tuple[str, int, int], FrameReader] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> FrameReader:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise TilepipeError(f"{path}: cannot be read ({exc.strerror})") from None
        key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            reader = self._readers.get(key)
            if reader is None:
                reader = self._readers[key] = FrameReader(path)
                while len(self._readers) > self.max_readers:
                    self._readers.popitem(last=False)
            self._readers.move_to_end(key)
            return reader

    def clear(self) -> None:
        with self._lock:
            self._readers.clear()


READERS = ReaderCache()
