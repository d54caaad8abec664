"""Pixels of a DICOM frame: decoding one frame at a time, checking up front that decoding will work,
and turning decoded values into what the model's scaling sees.

Frames come from the process's :mod:`.dicom_frames` readers: each file's header is parsed and its
frames located once, and a block decodes just the frames it needs. Before a run, the
transfer syntax is matched to an installed decoder and the pixel data's extent is checked against
the file's size from element headers alone, so a missing plugin or a truncated file stops the run
before any output exists, without decoding the series.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable

import numpy as np
from pydicom.pixels import get_decoder
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from ..errors import TilepipeError
from .dicom_header import Instance
from .dicom_frames import READERS, fragment_items, truncated

JFIF_WARNING = r".*codestream contains a JFIF APP marker.*"
"""Whole-slide JPEG frames often say RGB while their JFIF marker says YCbCr. pydicom warns (and
logs) for every such frame but decodes them right (checked against Pillow on the wsi_cmu1
sample). Silencing it is a process-wide choice, so it is the CLI's (:func:`tilepipe.cli.main`);
a library caller keeps its own warning filters, under which Python shows the warning once."""

_LIBJPEG = "pylibjpeg pylibjpeg-libjpeg"
_OPENJPEG = "pylibjpeg pylibjpeg-openjpeg"
INSTALL_HINTS = {
    JPEGBaseline8Bit: _LIBJPEG,
    JPEGExtended12Bit: _LIBJPEG,
    JPEGLossless: _LIBJPEG,
    JPEGLosslessSV1: _LIBJPEG,
    JPEGLSLossless: "pyjpegls",
    JPEGLSNearLossless: "pyjpegls",
    JPEG2000Lossless: _OPENJPEG,
    JPEG2000: _OPENJPEG,
    HTJ2KLossless: _OPENJPEG,
    HTJ2KLosslessRPCL: _OPENJPEG,
    HTJ2K: _OPENJPEG,
}
SUPPORTED_PHOTOMETRIC = {"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"}


def check_decodable(instance: Instance) -> None:
    """Raise unless an installed pydicom plugin decodes this instance's transfer syntax."""
    syntax = UID(instance.transfer_syntax)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise TilepipeError(f"{instance.path}: transfer syntax {syntax.name} ({syntax}) has no pydicom decoder; "
                            f"convert the file to an uncompressed or JPEG syntax first (e.g. gdcmconv --raw)") from None
    if not decoder.is_available:
        hint = INSTALL_HINTS.get(syntax, "one of: " + "; ".join(decoder.missing_dependencies))
        raise TilepipeError(f"{instance.path}: transfer syntax {syntax.name} needs a decoder plugin; "
                            f"install it with: pip install {hint}")
    if instance.photometric not in SUPPORTED_PHOTOMETRIC:
        raise TilepipeError(f"{instance.path}: photometric interpretation {instance.photometric} is not supported "
                            f"(supported: {', '.join(sorted(SUPPORTED_PHOTOMETRIC))})")


def check_pixel_data(instance: Instance) -> None:
    """Raise when the pixel data runs past the end of the file (a truncated copy).

    Native data: the element's length must fit in the file and hold every frame. Encapsulated
    data: the fragment items are walked by their headers (8 bytes each, never their contents) up
    to the sequence delimiter, which must be there, with at least one fragment per frame."""
    syntax = UID(instance.transfer_syntax)
    if instance.deflated:
        return  # offsets point into the inflated stream; the decoder reports a short stream itself
    size = os.path.getsize(instance.path)
    endian = "<" if syntax.is_little_endian else ">"
    with open(instance.path, "rb") as f:
        f.seek(instance.pixel_offset)
        wanted = 8 if syntax.is_implicit_VR else 12
        header = f.read(wanted)
        if len(header) < wanted:
            raise truncated(instance.path, "its pixel data element is cut off")
        length = struct.unpack(endian + "L", header[4:8] if syntax.is_implicit_VR else header[8:12])[0]
        value_at = instance.pixel_offset + len(header)
        if length == 0xFFFFFFFF:
            fragments = len(fragment_items(f, value_at, size, instance.path)[0]) - 1  # less the Basic Offset Table
            if fragments < instance.number_of_frames:
                raise truncated(instance.path, f"it has {fragments} compressed fragment(s) for "
                                               f"{instance.number_of_frames} frames")
            return
    if syntax.is_encapsulated:
        raise TilepipeError(f"{instance.path}: transfer syntax {syntax.name} but the pixel data is not "
                            f"encapsulated (it has a defined length); the file is malformed")
    needed = native_frame_bytes(instance) * instance.number_of_frames
    if value_at + length > size or length < needed:
        held = max(0, min(length, size - value_at))
        raise truncated(instance.path, f"its pixel data needs {needed} bytes, the file holds {held}")


def native_frame_bytes(instance: Instance) -> int:
    """Bytes of one uncompressed frame (bit-packed for 1-bit data, 2 samples a pixel for YBR_FULL_422)."""
    pixels = instance.rows * instance.columns
    if instance.bits_allocated == 1:
        return -(-pixels // 8)
    samples = 2 if instance.photometric == "YBR_FULL_422" else instance.samples
    return pixels * samples * instance.bits_allocated // 8


def decode_frame(path: str, index: int) -> np.ndarray:
    """Frame ``index`` (0-based) of ``path``: (rows, cols) or (rows, cols, samples), YBR as RGB."""
    try:
        return READERS.get(path).frame(index)
    except TilepipeError:
        raise
    except Exception as exc:  # decoders raise anything from ValueError to RuntimeError
        # pydicom lists each plugin's reason on its own line: keep them all, on one line
        text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        raise TilepipeError(f"{path}: frame {index + 1} cannot be decoded ({text})") from None


@dataclass(frozen=True)
class PixelFormat:
    """How decoded frames of a series become the (bands, h, w) values that scaling sees.

    Grayscale becomes float32 modality values (RescaleSlope/Intercept applied), and MONOCHROME1 is
    mirrored within the rescaled range of its stored bits, so that bright always means dense and a
    network trained on MONOCHROME2 sees the same polarity. Colour stays in its decoded dtype."""

    color: bool
    monochrome1: bool = False
    stored_range: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def of(cls, instance: Instance) -> PixelFormat:
        if instance.signed:
            low, high = -(2 ** (instance.bits_stored - 1)), 2 ** (instance.bits_stored - 1) - 1
        else:
            low, high = 0, 2 ** instance.bits_stored - 1
        return cls(instance.samples > 1, instance.photometric == "MONOCHROME1", (float(low), float(high)))

    @property
    def bands(self) -> tuple[int, ...]:
        return (1, 2, 3) if self.color else (1,)

    def values(self, raw: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
        if self.color:
            return np.ascontiguousarray(np.moveaxis(raw, -1, 0))
        values = raw.astype(np.float32)
        if slope != 1.0 or intercept != 0.0:
            values *= np.float32(slope)
            values += np.float32(intercept)
        if self.monochrome1:
            np.subtract(np.float32(self.mirror_sum(slope, intercept)), values, out=values)
        return values[None]

    def mirror_sum(self, slope: float, intercept: float) -> float:
        """``v -> mirror_sum - v`` mirrors the rescaled stored range onto itself."""
        return slope * sum(self.stored_range) + 2 * intercept


class FrameCache:
    """The few most recently decoded frames, bounded in bytes, shared by the threads of a process.

    Neighbouring blocks read overlapping halos, and a slice wider than a block is read by several
    blocks; without a cache each would decode the same frame again. Frames are decoded outside the
    lock (threads decode different frames in parallel) and stored read-only."""

    def __init__(self, max_bytes: int = 32 * 2**20):
        self.max_bytes = max_bytes
        self._frames: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            if key in self._frames:
                self._frames.move_to_end(key)
                return self._frames[key]
        frame = load()
        frame.flags.writeable = False
        with self._lock:
            if key not in self._frames:
                self._frames[key] = frame
                self._bytes += frame.nbytes
            while self._bytes > self.max_bytes and len(self._frames) > 1:
                _, old = self._frames.popitem(last=False)
                self._bytes -= old.nbytes
        return frame
