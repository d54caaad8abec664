"""What may tell apart DICOM frames that sit at one position: the labels of a 4-D series.

Multi-echo, field maps, fMRI or DWI time series and repeated acquisitions put several frames at
each position; the attributes read here say which volume a frame belongs to, and
:mod:`.dicom_volumes` picks among them. An enhanced image declares its own dimensions
(DimensionIndexSequence: each DimensionIndexValues entry points at an attribute of a functional
group), so the values of the dimensions that are not a position come first, by the attribute they
point at (``TemporalPositionIndex 2`` says more than ``index 2 of dimension 1``); then the
per-frame values scanners commonly vary. A classic image has its top-level attributes only.
Header values only, no pixel data.
"""

from __future__ import annotations

import pydicom

VOLUME_LABELS = ("EchoNumbers", "EchoTime", "TemporalPositionIdentifier", "DiffusionBValue", "AcquisitionNumber",
                 "TriggerTime", "ImageType")
"""Attributes of a classic image that can tell apart frames at one position (echoes, time points,
b-values, repeated acquisitions, magnitude/phase), most specific first: the order in which
:mod:`.dicom_volumes` tries them."""
ENHANCED_LABELS = (("FrameContentSequence", "TemporalPositionIndex"), ("MREchoSequence", "EffectiveEchoTime"),
                   ("MRDiffusionSequence", "DiffusionBValue"), ("FrameContentSequence", "StackID"))
"""Per-frame functional-group values of an enhanced image that can tell apart frames at one
position, tried after the image's own dimension indices."""
POSITION_DIMENSIONS = {"InStackPositionNumber", "ImagePositionPatient", "SliceLocation"}
"""Dimension indices that say where a frame is, not which volume it belongs to."""
SIEMENS_MR_HEADER = (0x0019, "SIEMENS MR HEADER", 0x0C)
"""Where Siemens classic MR images keep the diffusion b-value (a private element)."""


def classic_labels(ds) -> tuple[tuple[str, object], ...]:
    """The ``VOLUME_LABELS`` a classic image has, the b-value from Siemens' private header when
    the standard element is absent."""
    values = {keyword: _label_value(ds.get(keyword)) for keyword in VOLUME_LABELS}
    if values["DiffusionBValue"] is None:
        values["DiffusionBValue"] = _label_value(_private(ds, *SIEMENS_MR_HEADER))
    return tuple((k, v) for k, v in values.items() if v is not None)


def _private(ds, group: int, creator: str, offset: int):
    try:
        return ds.private_block(group, creator)[offset].value
    except KeyError:
        return None


def volume_dimensions(ds) -> list[tuple[str, int]]:
    """``(keyword, functional group sequence tag)`` of the image's dimension indices that do not
    index a position, in the order the image declares them."""
    found = []
    for item in ds.get("DimensionIndexSequence") or ():
        pointer, group = item.get("DimensionIndexPointer"), item.get("FunctionalGroupPointer")
        keyword = pydicom.datadict.keyword_for_tag(pointer) if pointer is not None else ""
        if keyword and group is not None and keyword not in POSITION_DIMENSIONS:
            found.append((keyword, int(group)))
    return found


def enhanced_labels(groups, shared, dimensions: list[tuple[str, int]]) -> tuple[tuple[str, object], ...]:
    """The frame's dimension index values, then the known per-frame values, from its own
    functional groups or else the shared ones."""
    labels: dict[str, object] = {}
    wanted = [(group, keyword) for keyword, group in dimensions] + list(ENHANCED_LABELS)
    for sequence, keyword in wanted:
        if keyword in labels:
            continue
        for source in (groups, shared):
            items = source.get(sequence) if source is not None else None
            item = items[0] if items else None
            value = _label_value(item.get(keyword)) if item is not None else None
            if value is not None:
                labels[keyword] = value
                break
    return tuple(labels.items())


def _label_value(value):
    """A JSON value for a label: a number, or text (a multi-valued element joined by backslashes)."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value) or None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    try:
        number = float(value)
    except (TypeError, ValueError):
        text = str(value).strip()
        return text or None
    return int(number) if number.is_integer() else number
