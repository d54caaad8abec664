"""``tilepipe plan --preview plan.png``: the plan drawn over a thumbnail of the input, in one look.

The picture shows the input (the middle plane of a stack), the **units of work** (thick, numbered:
a strip that one task computes top to bottom), the **block grid** inside them (thin: a block is
one chunk row of a strip, written and recorded as one, the unit of resuming), **one block's tile
lattice** (the tiles the network sees for that block, overlapping, and the read window they need),
and the **no-data regions** that the run will skip (hatched; blocks with no valid pixel are crossed
out). A legend below the
picture says what each mark is, with the plan's numbers; it never covers the image.

The thumbnail (:mod:`tilepipe.exporters.thumbnail`) never reads the whole input at full
resolution (a tiled file without overviews still decodes each sampled row's tiles). Small images
are enlarged nearest-neighbour so the marks stay legible. No-data is judged at the thumbnail's
resolution, so a sliver of data narrower than a thumbnail pixel can be drawn as no-data although
the run will segment it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..exporters.cog import staged_output
from ..exporters.thumbnail import centres, thumbnail
from ..grid import Block, Window
from ..partition import Plan

PREVIEW_SIZE = 1024
BLOCK_COLOUR = (230, 25, 75)
UNIT_COLOUR = (245, 130, 48)
TILE_COLOURS = ((0, 200, 255), (255, 225, 25))
READ_COLOUR = (255, 255, 255)
NO_DATA_COLOUR = (128, 128, 128)


def picture_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The picture's (h, w): longest side ``size``, enlarging small images too."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _hatch(rgb: np.ndarray, where: np.ndarray) -> None:
    """Grey diagonal hatching over ``where``: the run skips these pixels."""
    yy, xx = np.indices(where.shape)
    stripes = ((yy + xx) // 6) % 2 == 0
    rgb[where] = (rgb[where] * 0.3 + np.array(NO_DATA_COLOUR) * 0.7).astype(np.uint8)
    rgb[where & stripes] = (90, 90, 90)


def _example_block(plan: Plan, valid: np.ndarray, scale: float, plane: int | None) -> Block | None:
    """The block with data nearest the image centre: its lattice is the one drawn."""
    lead = () if plane is None else (plane,)
    candidates = []
    for band in range(plan.bands):
        for strip in range(plan.strips):
            block = plan.block(lead + (band, strip))
            if _box_valid(block.core, valid, scale).any():
                c = block.core
                distance = (c.row + c.height / 2 - plan.height / 2) ** 2 + (c.col + c.width / 2 - plan.width / 2) ** 2
                candidates.append((distance, block.index, block))
    return min(candidates)[2] if candidates else None


def _box(window: Window, scale: float) -> tuple[int, int, int, int]:
    """A window's rectangle on the picture: (x0, y0, x1, y1), inclusive corners."""
    return (round(window.col * scale), round(window.row * scale),
            round(window.col_stop * scale) - 1, round(window.row_stop * scale) - 1)


def _box_valid(window: Window, valid: np.ndarray, scale: float) -> np.ndarray:
    x0, y0, x1, y1 = _box(window, scale)
    return valid[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1]


def draw_plan(rgb: np.ndarray, valid: np.ndarray, plan: Plan, overlap: int, slots: int, title: str,
              plane: int | None) -> Image.Image:
    """The plan over the picture ``rgb`` (already at picture size), with the legend below it."""
    h, w = valid.shape
    scale = w / plan.width
    _hatch(rgb, ~valid)
    picture = Image.fromarray(rgb)
    draw = ImageDraw.Draw(picture)
    line = max(1, round(min(h, w) / 500))
    font = ImageFont.load_default(size=max(11, min(24, min(h, w) // 45)))
    example = _example_block(plan, valid, scale, plane)
    if example is not None:
        for k, tile in enumerate(example.tiles):
            draw.rectangle(_box(tile, scale), outline=TILE_COLOURS[k % 2], width=line)
        draw.rectangle(_box(example.read_window, scale), outline=READ_COLOUR, width=line)
    lead = () if plane is None else (plane,)
    skipped = 0
    for band in range(plan.bands):
        for strip in range(plan.strips):
            core = plan.block(lead + (band, strip)).core
            x0, y0, x1, y1 = box = _box(core, scale)
            if not _box_valid(core, valid, scale).any():
                skipped += 1
                draw.line((x0, y0, x1, y1), fill=NO_DATA_COLOUR, width=line)
                draw.line((x0, y1, x1, y0), fill=NO_DATA_COLOUR, width=line)
            draw.rectangle(box, outline=BLOCK_COLOUR, width=line)
    tasks = plan.tasks(slots=slots)
    units = [(k, u) for k, task in enumerate(tasks) for u in task if u.plane == plane]
    for k, unit in units:
        x0, y0, x1, y1 = box = _box(unit.core, scale)
        draw.rectangle(box, outline=UNIT_COLOUR, width=3 * line)
        label = f"task {k + 1}"
        if x1 - x0 > 5 * font.size:
            at = (x0 + 3 * line + 2, y0 + 3 * line + 1)
            draw.rectangle(draw.textbbox(at, label, font=font), fill=(255, 255, 255))
            draw.text(at, label, fill=UNIT_COLOUR, font=font)
    blocks = plan.bands * plan.strips
    entries = [
        (UNIT_COLOUR, f"unit of work: a strip computed top to bottom; {len(tasks)} task(s) of one or more units"
                      + (f" for {plan.planes} planes" if plan.depth else "") + f", {slots} at once"),
        (BLOCK_COLOUR, f"block: one {plan.chunk_size} px chunk row of a strip, written and recorded as one: "
                       f"{blocks} blocks" + (" per plane" if plan.depth else "")),
        (TILE_COLOURS[0], f"tiles of block {','.join(map(str, example.index[-2:]))}: {example.tile_count} tiles of "
                          f"{plan.tile_height} x {plan.tile_width} px overlapping by {overlap} px"
         if example else "no block has data: no tile will run"),
        (READ_COLOUR, "read window of that block: its tiles, the block plus the halo they need"),
        (NO_DATA_COLOUR, f"no data, skipped (hatched); crossed out: {skipped} of {blocks} blocks with nothing to run"),
    ]
    return _with_legend(picture, title, entries, font)


def _with_legend(picture: Image.Image, title: str, entries: list, font) -> Image.Image:
    """``picture`` above a white legend panel: the marks never cover the image."""
    size = font.size
    pad, step = size // 2, size + size // 2
    panel = pad * 2 + step * (len(entries) + 1)
    canvas = Image.new("RGB", (picture.width, picture.height + panel), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    top = picture.height + pad
    draw.text((pad, top), title, fill=(0, 0, 0), font=font)
    for i, (colour, text) in enumerate(entries, start=1):
        y = top + i * step
        draw.rectangle((pad, y, pad + size, y + size), fill=colour, outline=(0, 0, 0))
        draw.text((pad * 2 + size, y), text, fill=(0, 0, 0), font=font)
    return canvas


def write_preview(source, plan: Plan, overlap: int, slots: int, out: str, size: int = PREVIEW_SIZE) -> str:
    """Draw the plan of ``source`` to the PNG ``out`` (tasks grouped for ``slots`` workers); returns ``out``."""
    plane = plan.depth // 2 if plan.depth else None
    shape = picture_shape(plan.height, plan.width, size)
    read_shape = shape if shape[0] <= plan.height else (plan.height, plan.width)
    rgb, valid = thumbnail(source, read_shape, plane)
    if read_shape != shape:  # enlarge a small image, nearest-neighbour
        rows, cols = (centres(n, c) for n, c in zip(read_shape, shape))
        rgb, valid = rgb[rows][:, cols], valid[rows][:, cols]
    title = (f"{source.path.rsplit('/', 1)[-1]}: {plan.width} x {plan.height} px"
             + (f", plane {plane} of {plan.depth}" if plane is not None else ""))
    image = draw_plan(rgb, valid, plan, overlap, slots, title, plane)
    with staged_output(out) as (_, path):
        image.save(path, format="PNG")
    return str(out)
