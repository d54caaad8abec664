"""What the mask measures: pixels, areas and volumes per class, tallied as blocks are written.

A run never re-reads its mask to count it. Each block, as the sink writes it, adds one small
record to the store's ``class_tally`` array (one ``(2, 256)`` float64 record per block, beside
the block's completion record): row 0 counts the block's pixels per label value (a bincount),
row 1 holds their area in m² on the ellipsoid for a scene in a geographic CRS, where a pixel's
area depends on its row (its latitude). A resumed run adds its blocks' records to those the
first run left, so :func:`class_measures` sums every block whoever wrote it, from
``blocks x 4 KiB`` of records rather than from the mask.

Everything else is a constant per pixel, per plane or per volume, applied when the records are
summed (:mod:`tilepipe.measure_units` says which constant and why)."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import zarr

from .measure_units import PixelMeasure, geodesic_row_areas, pixel_measure

TALLY = "class_tally"
BINS = 256
"""Every uint8 label value has a bin, so a record needs neither the class count nor the no-data value."""


def create_tally(group: zarr.Group, block_grid_shape: tuple[int, ...]) -> None:
    """The empty ``class_tally`` array of a new store: one chunk per block, so each block's task
    writes its own record and nothing else (no locks, as for the mask's chunks)."""
    group.create_array(TALLY, shape=(*block_grid_shape, 2, BINS), chunks=(*(1,) * len(block_grid_shape), 2, BINS),
                       dtype="float64", fill_value=0.0,
                       dimension_names=[*group["blocks"].metadata.dimension_names, "measure", "label"],
                       attributes={"description": "per block: pixels per label value, then their area in m² "
                                                  "on the ellipsoid (geographic CRS only, else 0)"})


def block_record(labels: np.ndarray, first_row: int, row_areas=None) -> np.ndarray:
    """One block's ``(2, BINS)`` record. ``row_areas(rows)``: the m² of one pixel in each of
    those rows (geographic CRS), or None."""
    record = np.zeros((2, BINS))
    if row_areas is None:
        record[0] = np.bincount(labels.ravel(), minlength=BINS)
        return record
    per_row = np.bincount((np.arange(len(labels))[:, None] * BINS + labels).ravel(),
                          minlength=len(labels) * BINS).reshape(len(labels), BINS)
    record[0] = per_row.sum(axis=0)
    record[1] = row_areas(np.arange(first_row, first_row + len(labels))) @ per_row
    return record


class BlockTally:
    """A store's ``class_tally`` as its writer sees it: :meth:`write` one block's record."""

    def __init__(self, group: zarr.Group):
        self.group = group
        self.array = group[TALLY]

    @classmethod
    def of(cls, group: zarr.Group) -> BlockTally | None:
        """None for a store written before tallies existed (its summary says so)."""
        return cls(group) if TALLY in group else None

    @cached_property
    def row_areas(self):
        """Read from the store's attributes once per handle, when its first block is written."""
        measure = pixel_measure(dict(self.group.attrs))
        return geodesic_row_areas(measure) if measure.geodesic else None

    def write(self, index: tuple[int, ...], labels: np.ndarray, first_row: int) -> None:
        self.array[tuple(index)] = block_record(labels, first_row, self.row_areas)


def class_measures(group: zarr.Group) -> dict:
    """Per-class measures of a store, summed from its blocks' records: the ``measures`` of the run
    summary, also what :func:`tilepipe.measures` returns for a store."""
    if TALLY not in group:
        return {"note": "this store was written before tilepipe tallied classes: no measures"}
    attrs = dict(group.attrs)
    done = group["blocks"][...].astype(bool)
    tally = group[TALLY][...] * done[..., None, None]  # a block whose write was cut short is not counted
    measure = pixel_measure(attrs)
    names = list(attrs.get("class_names") or [])
    nodata = group["mask"].attrs.get("nodata", BINS - 1)
    mask_shape = group["mask"].shape
    written = f"{int(done.sum())} of {done.size} blocks" + ("" if done.all() else " (the run is not finished)")
    figures = {"blocks_tallied": written, "pixel": measure.note}
    if len(mask_shape) == 4:  # (volume, z, y, x): the block grid's planes run volume-major
        per_plane = tally.reshape(mask_shape[0], mask_shape[1], -1, 2, BINS).sum(axis=2)
        volumes = [_classes(per_plane[v], measure, names, nodata) for v in range(mask_shape[0])]
        figures["volumes"] = [{"volume": v, **c} for v, c in enumerate(volumes)]
        per_plane = per_plane.reshape(-1, 2, BINS)
    else:
        per_plane = tally.reshape(mask_shape[0] if len(mask_shape) == 3 else 1, -1, 2, BINS).sum(axis=1)
    return {**figures, **_classes(per_plane, measure, names, nodata)}


def _classes(per_plane: np.ndarray, measure: PixelMeasure, names: list[str], nodata: int) -> dict:
    """``per_plane``: ``(planes, 2, BINS)`` summed records, in plane order."""
    pixels = per_plane[:, 0].sum(axis=0)
    valid = pixels.sum() - pixels[nodata]  # blocks with no valid pixel wrote no record: no-data is not counted
    quantities = measure.quantities(per_plane)
    rows = []
    for label in np.flatnonzero(pixels):
        if label == nodata:
            continue
        row = {"id": int(label), "name": names[label] if label < len(names) else f"class {label}",
               "pixels": int(pixels[label]), "share": round(float(pixels[label] / valid), 6)}
        row.update({key: _rounded(values[label]) for key, values in quantities.items()})
        rows.append(row)
    return {"valid_pixels": int(valid), "classes": rows}


def _rounded(value: float) -> float:
    """Six significant digits: an area is not known better than its pixel size."""
    return float(f"{value:.6g}")
