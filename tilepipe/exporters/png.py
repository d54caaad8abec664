"""A PNG preview of the mask: the class colours of :mod:`.colors`, a legend, optionally over the image.

The preview's longest side is ``max_size`` (or the mask's, when the mask is smaller), and it is
sampled nearest-neighbour at pixel centres, one chunk row of the store at a time, so a preview of
a 100,000-pixel-wide mask reads one row of chunks at once and never holds the mask. Labels are
sampled, not averaged: an average of class numbers is a meaningless class. A mask smaller than
:data:`LEGIBLE_SIDE` is then enlarged by a whole factor, nearest-neighbour (each mask pixel becomes
a square), up to ``max_size``: on a 64-pixel mask the legend would otherwise cover the picture.

Without ``overlay`` the PNG is RGBA and nodata is transparent. With ``overlay`` the classes are
blended half-and-half over the input image, read again from the path and options the store
recorded, at the preview's size (:mod:`.thumbnail`: a GeoTIFF from its overviews where it has them,
a whole slide from the smallest pyramid level at least that size, a DICOM stack's plane row by
row) and scaled to 0-255 with the intensity scaling (the DICOM window) the run recorded, so the
picture is what the network saw; nodata shows the image alone.

The legend (swatch and name of every class visible in the preview) sits in the top-left corner,
inside the map area, so the file has exactly the requested size.

For a stack (a (z, y, x) store from a DICOM series) the preview shows the middle slice, of the
first volume for a 4-D store, and the overlay that slice of the input.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rasterio.errors import RasterioError

from ..errors import TilepipeError, first_line
from ..labels import NO_LABEL
from ..sink import MaskStore
from ..sources import SourceSpec, open_source
from ..sources.scaling import IntensityScaling, ScalingRequest
from .cog import staged_output
from .colors import ALPHA, palette
from .thumbnail import centres, thumbnail

OVERLAY_OPACITY = 0.5
LEGIBLE_SIDE = 768


def export(store: MaskStore, out: str, max_size: int = 2048, overlay: bool = False) -> str:
    """Write a preview of ``store`` to ``out``; returns ``out``."""
    if max_size < 1:
        raise TilepipeError(f"--max-size {max_size}: must be at least 1")
    labels = sample_labels(store, max_size)
    colours = palette(store.group.attrs)
    if overlay:
        image = _blend(_input_image(store, labels.shape), labels, colours)
    else:
        image = Image.fromarray(np.dstack([colours[labels], ALPHA[labels]]))
    factor = enlargement(labels.shape, max_size)
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    present = [int(v) for v in np.unique(labels) if v != NO_LABEL]
    _draw_legend(image, [(colours[v], store.group.attrs["class_names"][v]) for v in present])
    with staged_output(out) as (_, path):
        image.save(path, format="PNG")
    return str(out)


def preview_shape(height: int, width: int, max_size: int) -> tuple[int, int]:
    """Scale ``(height, width)`` so the longest side is ``max_size``; never enlarge."""
    scale = min(1.0, max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def enlargement(shape: tuple[int, int], max_size: int) -> int:
    """The whole factor that brings a small preview to about :data:`LEGIBLE_SIDE`, within ``max_size``."""
    longest = max(shape)
    return max(1, min(-(-LEGIBLE_SIDE // longest), max_size // longest))


def sample_labels(store: MaskStore, max_size: int) -> np.ndarray:
    """The nearest-neighbour preview of the mask (the middle slice of a stack, of its first volume
    for a 4-D store), read by chunk rows."""
    mask = store.mask
    plane = middle_plane(mask)
    height, width = mask.shape[-2:]
    rows, cols = (centres(n, c) for n, c in zip((height, width), preview_shape(height, width, max_size)))
    labels = np.empty((len(rows), len(cols)), np.uint8)
    chunk = mask.chunks[-2]
    for start in range(0, height, chunk):
        here = (rows >= start) & (rows < start + chunk)
        if here.any():
            labels[here] = mask.oindex[plane + (rows[here], cols)]
    return labels


def middle_plane(mask) -> tuple[int, ...]:
    """The index of the plane a preview shows: the middle slice of a stack, of its first volume for
    a 4-D mask; () for a 2-D mask."""
    return (0,) * (mask.ndim - 3) + (mask.shape[-3] // 2,) if mask.ndim >= 3 else ()


def _input_image(store: MaskStore, shape: tuple[int, int]) -> np.ndarray:
    """The run's input under the preview (the middle plane of a stack, which a 4-D source numbers
    volume-major, so volume 0's is the same index) at ``shape``, scaled as the run scaled it:
    (h, w, 3) uint8. The source is opened with a fixed scaling, so nothing is sampled again: the
    recorded one is applied."""
    info = store.info
    path, options = info.input, info.options
    spec = SourceSpec(path=path, bands=tuple(options["bands"]) if options.get("bands") else None,
                      scaling=ScalingRequest("fixed", fixed=(0.0, 1.0)), series=options.get("series"),
                      level=options.get("level") or 0, select=options.get("select"))
    plane = middle_plane(store.mask)
    try:
        return thumbnail(open_source(spec), shape, plane[-1] if plane else None,
                         IntensityScaling(**store.summary["input"]["scaling"]))[0]
    except (TilepipeError, RasterioError, OSError) as exc:
        raise TilepipeError(f"--overlay: cannot read the input {path} ({first_line(exc)}); "
                            f"export without --overlay") from None


def _blend(picture: np.ndarray, labels: np.ndarray, palette: np.ndarray) -> Image.Image:
    colours = palette[labels].astype(np.float32)
    mixed = (1 - OVERLAY_OPACITY) * picture + OVERLAY_OPACITY * colours
    labelled = (labels != NO_LABEL)[..., None]
    return Image.fromarray(np.where(labelled, mixed.round(), picture).astype(np.uint8))


def _draw_legend(image: Image.Image, entries: list[tuple[np.ndarray, str]]) -> None:
    """A white box in the top-left corner: one swatch and name per entry. Text scales with the
    preview (10 to 32 px) so it stays readable at 300 px and at 4000 px."""
    if not entries:
        return
    size = min(32, max(10, max(image.size) // 64))
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(image)
    pad, line = size // 2, size + size // 2
    text_width = max(draw.textlength(name, font=font) for _, name in entries)
    box = (0, 0, int(pad * 3 + size + text_width), pad * 2 + line * len(entries) - (line - size))
    draw.rectangle(box, fill=(255, 255, 255, 255), outline=(0, 0, 0, 255))
    for i, (colour, name) in enumerate(entries):
        top = pad + i * line
        draw.rectangle((pad, top, pad + size, top + size), fill=(*map(int, colour), 255), outline=(0, 0, 0, 255))
        draw.text((pad * 2 + size, top + size / 2), name, fill=(0, 0, 0, 255), font=font, anchor="lm")
