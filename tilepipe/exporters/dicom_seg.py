"""DICOM Segmentation export with highdicom: the mask of a finished DICOM run as a SEG object.

One segment per class present in the mask (every label except the nodata value 255), numbered 1..K
in class order and named after the class; nodata is background. The SEG is BINARY (the kind every
SEG-capable viewer reads) and references the source instances recorded in the store's ``dicom``
attributes. Their headers (never their pixels) are re-read from the paths saved at run time, so the
source files must still be there, with the same SOPInstanceUIDs.

How mask planes meet source frames: by the geometry the store recorded, not by the order of the
source's frames. Each plane of a stack goes to highdicom with its own ImagePositionPatient (the
store's ``slice_positions``, per volume for a 4-D store), the stack's orientation and pixel
spacing, and highdicom pairs every plane with the source frames or instances at that position.
So a series, an enhanced multi-frame image, a ``--select`` store that kept some of a file's frames
and each volume of a 4-D store are all written the same way. highdicom still reads the pixel
measures and orientation of a multi-frame source from its *shared* functional groups (the macros
it compares against), while many scanners (Philips, Siemens enhanced MR) write them per frame:
the header copy handed to highdicom gets frame 1's macros as shared ones, which is what the store's
geometry already assumed (one orientation, checked at run time, and one pixel spacing).

* a stack without positions (secondary capture, a multi-frame without functional groups): one plane
  is paired with its source by pixel matrix; several planes cannot be placed in a SEG, which needs a
  position for every frame of a source with a frame of reference, and are refused;
* a whole-slide level: the 2-D mask is the total pixel matrix, tiled by highdicom in the source's
  frame size.

The mask is read band by band (a plane, or a band of chunk rows for a 2-D mask), but highdicom takes
the whole segmentation as one array: a uint8 label map the size of the mask is the one thing here
that grows with the image.
"""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from .. import __version__
from ..errors import TilepipeError, first_line
from ..labels import NO_LABEL
from ..sink import MaskStore
from ..sources.dicom_volumes import describe_labels

TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                       "ReferringPhysicianName", "StudyID", "AccessionNumber")
"""Type 2 attributes SEG copies from its source: present but possibly empty. Some sources (the
whole-slide sample among them) leave them out, which highdicom refuses; empty values say the same."""


def export(store: MaskStore, out: str) -> str:
    """Write the SEG (one per volume for a 4-D store); returns the path(s) written, one a line."""
    import highdicom as hd

    geometry = store.group.attrs.get("dicom")
    if not geometry:
        raise TilepipeError(f"{store.url}: its input was not DICOM; --to dicom-seg needs a store made from DICOM")
    mask = store.mask
    classes = present_classes(mask)
    if not classes:
        raise TilepipeError(f"{store.url}: the mask holds no class at all (only nodata); nothing to export")
    labels = label_map(mask, classes)
    names = list(store.group.attrs.get("class_names") or [])
    model = store.info.model or {}
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"tilepipe {model.get('architecture', 'model')}"[:64],
        family=codes.cid7162.ArtificialIntelligence,
        version=str(model.get("weights", "unknown"))[:64],
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=(names[c] if c < len(names) else f"class {c}")[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=f"tilepipe class {c}",
        )
        for number, c in enumerate(classes, start=1)
    ]
    seg = _SegWriter(descriptions, hd.UID(), f"{model.get('architecture', 'model')} segmentation by tilepipe"[:64])
    if labels.ndim < 4:
        return seg.write(out, _source_headers(geometry, slice(None), store.url), labels, geometry, store.url)
    written, slices = [], labels.shape[1]
    for v, volume in enumerate(geometry["volumes"]):
        path = _volume_path(out, v)
        seg.write(path, _source_headers(geometry, slice(v * slices, (v + 1) * slices), store.url), labels[v],
                  geometry, store.url, instance_number=v + 1, volume=volume)
        written.append(path)
    return "\n".join(written)


def _volume_path(out: str, volume: int) -> str:
    """``seg.dcm`` -> ``seg_volume0.dcm``: one SEG per volume of a 4-D store."""
    stem, dot, suffix = out.rpartition(".")
    return f"{stem}_volume{volume}.{suffix}" if dot and "/" not in suffix else f"{out}_volume{volume}"


class _SegWriter:
    """Builds and saves SEG instances of one series: one per volume of a 4-D store.

    A SEG may not hold two frames at one position (highdicom refuses them), so the volumes of a
    4-D store, which share their positions, each get their own instance; the series, the
    segments and their tracking UIDs are shared."""

    def __init__(self, descriptions, series_uid: str, content: str):
        self.descriptions, self.series_uid, self.content = descriptions, series_uid, content

    def write(self, out: str, sources: list[Dataset], labels: np.ndarray, geometry: dict, url: str,
              instance_number: int = 1, volume: dict | None = None) -> str:
        import highdicom as hd

        whole_slide = geometry["kind"] == "whole-slide"
        placement = {}
        if whole_slide:
            _default_slide_origin(sources[0])
            labels = labels[None]
        else:
            placement = _placement(geometry, volume, len(labels), url)
            for ds in sources:
                _shared_plane_macros(ds)
        about = f" ({describe_labels(volume['labels'])})" if volume else ""
        try:
            seg = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=labels,
                segmentation_type="BINARY",
                segment_descriptions=self.descriptions,
                series_instance_uid=self.series_uid,
                series_number=1,
                sop_instance_uid=hd.UID(),
                instance_number=instance_number,
                manufacturer="tilepipe",
                manufacturer_model_name="tilepipe",
                software_versions=__version__,
                device_serial_number="none",
                series_description=f"tilepipe SEG{about}"[:64],
                content_label="TILEPIPE",
                content_description=self.content,
                tile_pixel_array=whole_slide,
                **placement,
            )
            seg.save_as(out)
        except (ValueError, TypeError, AttributeError) as exc:
            raise TilepipeError(f"{out}: highdicom cannot build a SEG for this source ({first_line(exc)})") from None
        except OSError as exc:
            raise TilepipeError(f"{out}: cannot write it ({exc.strerror or exc})") from None
        return out


def _placement(geometry: dict, volume: dict | None, planes: int, url: str) -> dict:
    """highdicom's ``plane_positions``, ``plane_orientation`` and ``pixel_measures`` of a stack's
    planes (of one volume of a 4-D store), from the store's geometry; none for one unplaced plane."""
    import highdicom as hd

    positions = (volume or geometry)["slice_positions"]
    if positions is None:
        if planes == 1:
            return {}
        raise TilepipeError(f"{url}: its {planes} planes have no position (no ImagePositionPatient in the source), "
                            f"and a DICOM SEG must place each of its frames; export it --to png instead")
    patient = hd.CoordinateSystemNames.PATIENT
    spacing = geometry["pixel_spacing"]
    return {
        "plane_positions": [hd.PlanePositionSequence(patient, p) for p in positions],
        "plane_orientation": hd.PlaneOrientationSequence(patient, geometry["image_orientation_patient"]),
        "pixel_measures": hd.PixelMeasuresSequence(spacing, geometry["slice_thickness"]) if spacing else None,
    }


def _shared_plane_macros(ds: Dataset) -> None:
    """A multi-frame source that gives its pixel measures or plane orientation per frame gets frame
    1's as shared functional groups, where highdicom reads them (the module docstring says why)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return
    if "SharedFunctionalGroupsSequence" not in ds:
        ds.SharedFunctionalGroupsSequence = [Dataset()]
    shared = ds.SharedFunctionalGroupsSequence[0]
    for keyword in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
        if keyword not in shared and keyword in per_frame[0]:
            setattr(shared, keyword, getattr(per_frame[0], keyword))


def _bands(mask):
    """The mask in pieces: each plane of a (z, y, x) or (volume, z, y, x) mask, or bands of chunk
    rows of a 2-D one."""
    if mask.ndim > 2:
        for plane in np.ndindex(mask.shape[:-2]):
            yield plane, mask[plane]
    else:
        step = mask.chunks[0]
        for row in range(0, mask.shape[0], step):
            yield (slice(row, row + step),), mask[row:row + step]


def present_classes(mask) -> list[int]:
    """The labels that occur in the mask, except nodata, in ascending order."""
    counts = np.zeros(256, np.int64)
    for _, piece in _bands(mask):
        counts += np.bincount(np.asarray(piece).ravel(), minlength=256)
    return [int(c) for c in np.flatnonzero(counts) if c != NO_LABEL]


def label_map(mask, classes: list[int]) -> np.ndarray:
    """The mask with class ``classes[k]`` as segment ``k + 1`` and nodata as background (0)."""
    lut = np.zeros(256, np.uint8)
    lut[classes] = np.arange(1, len(classes) + 1, dtype=np.uint8)
    labels = np.zeros(mask.shape, np.uint8)
    for where, piece in _bands(mask):
        labels[where] = lut[np.asarray(piece)]
    return labels


def _source_headers(geometry: dict, planes: slice, url: str) -> list[Dataset]:
    """Headers of the distinct source files of ``planes``, in plane order, checked against the
    recorded UIDs."""
    files = geometry["source_files"][planes]
    paths = list(dict.fromkeys(files))
    expected = dict(zip(files, geometry["sop_instance_uids"][planes]))
    headers = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except FileNotFoundError:
            raise TilepipeError(f"{path}: source file of {url} is gone; the SEG must reference it") from None
        except Exception as exc:  # pydicom raises many types for a damaged file
            raise TilepipeError(f"{path}: cannot read the source file of {url} ({exc})") from None
        if str(ds.SOPInstanceUID) != expected[path]:
            raise TilepipeError(f"{path}: holds SOPInstanceUID {ds.SOPInstanceUID}, not {expected[path]} that {url} "
                                f"was made from; the file was replaced")
        for keyword in TYPE2_PATIENT_STUDY:
            if keyword not in ds:
                setattr(ds, keyword, "")
        headers.append(ds)
    return headers


def _default_slide_origin(ds: Dataset) -> None:
    """A whole-slide source without TotalPixelMatrixOriginSequence (type 1, but missing from some
    converters' output) gets origin (0, 0): the SEG then lines up by pixel matrix, which is what
    the source itself gives a viewer."""
    if "TotalPixelMatrixOriginSequence" not in ds:
        origin = Dataset()
        origin.XOffsetInSlideCoordinateSystem = 0
        origin.YOffsetInSlideCoordinateSystem = 0
        ds.TotalPixelMatrixOriginSequence = [origin]
