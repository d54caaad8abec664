"""The modes a run or an export can be in, as enums: the one list of each mode's names.

The option declaration (:mod:`tilepipe.options`) takes its choices from here, and so do the code
that acts on a mode (the stitcher, the engine, the exporters) and the command line. Members are
``str`` (or ``int``) subclasses, so they compare equal to and hash like their plain values, and
JSON writes them as those values: the store's attributes and the run summary hold the same
strings as before. (YAML's safe dumper and reprs do not: use ``RunOptions.to_json()``.)

This module imports nothing heavy, so the command line can build its choices without torch.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Blending(StrEnum):
    """How overlapping tile predictions are merged (see :mod:`tilepipe.stitch`)."""

    GAUSSIAN = "gaussian"
    CROP = "crop"


class Precision(StrEnum):
    """The autocast precision of the forward passes; ``auto`` is bf16 (or fp16) on CUDA, fp32 on a CPU."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class OutputStride(IntEnum):
    """The network's output stride: how many input pixels one output pixel spans."""

    EIGHT = 8
    SIXTEEN = 16


class ExportFormat(StrEnum):
    """What ``tilepipe export --to`` writes (see :mod:`tilepipe.exporters`)."""

    COG = "cog"
    PNG = "png"
    DICOM_SEG = "dicom-seg"
    GEOPARQUET = "geoparquet"
    GPKG = "gpkg"
    GEOJSON = "geojson"
