"""The class colours every exporter uses, so a class looks the same in the COG's colour table and
in the PNG preview.

The colours are the PASCAL VOC colour map (class 0 black, 1 dark red, 2 green, ...): the first 21
are the ones the torchvision VOC weights' users already know, and the map's bit-interleaving rule
gives every one of the 256 label values a distinct colour, so heads with more classes get fixed
colours too. 255 is the nodata label: black, and fully transparent wherever an alpha channel exists.
"""

from __future__ import annotations

import numpy as np

from ..labels import NO_LABEL


def _voc_color(value: int) -> tuple[int, int, int]:
    """Bits 0, 1, 2 of ``value`` become the top bits of red, green, blue; the next three the next
    bits, and so on (the rule of the VOC development kit's ``labelcolormap``)."""
    rgb = [0, 0, 0]
    for shift in range(8):
        for channel in range(3):
            rgb[channel] |= ((value >> channel) & 1) << (7 - shift)
        value >>= 3
    return rgb[0], rgb[1], rgb[2]


PALETTE = np.array([_voc_color(v) for v in range(256)], dtype=np.uint8)
"""(256, 3) uint8: the RGB colour of every label value; ``PALETTE[NO_LABEL]`` is black."""
PALETTE[NO_LABEL] = 0

ALPHA = np.full(256, 255, dtype=np.uint8)
"""(256,) uint8: opaque for classes, transparent for nodata."""
ALPHA[NO_LABEL] = 0


def palette(attrs) -> np.ndarray:
    """The store's palette: the model card's class colours (``class_colours`` attribute) for its
    classes where the card gave them, the VOC colours for every other label value."""
    colours = np.array(PALETTE)
    given = attrs.get("class_colours") or []
    if given:
        colours[: len(given)] = np.asarray(given, dtype=np.uint8)
    return colours


def colormap(attrs) -> dict[int, tuple[int, int, int, int]]:
    """The store's palette as a GDAL colour table (rasterio's ``write_colormap`` takes this dict)."""
    colours = palette(attrs)
    return {v: (*map(int, colours[v]), int(ALPHA[v])) for v in range(256)}

