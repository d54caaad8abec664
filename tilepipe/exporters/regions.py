"""Polygons of a mask, one per connected region of a class, built chunk row by chunk row.

``rasterio.features.shapes`` on the whole mask would give the answer but hold the whole raster
(and every polygon of it as GeoJSON) in memory. Here each band of whole chunk rows, full width, is
polygonised on its own, so regions crossing the chunk edges inside a band come out whole; regions
cut by the band's lower edge stay *open*. At the next band, the pixels either side of the seam
say which open regions continue into which new polygons (same class, vertically adjacent): a
union-find joins them, and a region is emitted, its parts unioned into one polygon (holes kept),
as soon as none of it touches the lower edge of the band just read. Memory holds one band and the
parts of the regions still open across its lower edge, never the raster.

Connectivity is 4 (edge neighbours, rasterio's default): two pixels of one class that touch only
at a corner belong to two regions, as ``scipy.ndimage.label`` counts them with its default
structure. Polygons are in pixel coordinates (x = column, y = row, pixel edges on integers);
the caller places them in the world.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import shapely
from affine import Affine
from rasterio import features

from ..sink import NO_LABEL


def region_polygons(mask, band_rows: int, classes: set[int] | None = None) -> Iterator[tuple[int, shapely.Polygon]]:
    """``(class, polygon)`` for each connected region of ``mask`` (a 2-D array-like read by row
    slices, e.g. a Zarr array), reading ``band_rows`` rows at a time; NO_LABEL and classes outside
    ``classes`` (when given) are not regions."""
    height, width = mask.shape
    open_regions: dict[int, tuple[int, list[shapely.Polygon]]] = {}  # id -> (class, parts)
    below_ids = below_row = None  # the open regions' ids and labels along the last row read
    next_id = 0
    for top in range(0, height, band_rows):
        bottom = min(top + band_rows, height)
        band = np.asarray(mask[top:bottom])
        keep = band != NO_LABEL
        if classes is not None:
            keep &= np.isin(band, list(classes))
        found = [(int(value), _polygon(geom["coordinates"])) for geom, value in
                 features.shapes(band, mask=keep, connectivity=4, transform=Affine.translation(0, top))]
        values = [v for v, _ in found]
        polygons = np.array([p for _, p in found], dtype=object)
        bounds = shapely.bounds(polygons) if len(polygons) else np.zeros((0, 4))
        ids = np.arange(next_id, next_id + len(found))
        next_id += len(found)
        joins = UnionFind()
        if below_ids is not None:
            top_ids = _edge_ids(polygons, bounds[:, 1] == top, ids, top, width)
            seam = (below_row == band[0]) & keep[0] & (below_ids >= 0) & (top_ids >= 0)
            for a, b in np.unique(np.stack([below_ids[seam], top_ids[seam]], axis=1), axis=0):
                joins.union(int(a), int(b))
        groups: dict[int, list[int]] = {}
        for member in [*open_regions, *ids.tolist()]:
            groups.setdefault(joins.find(member), []).append(member)
        continues = set(ids[bounds[:, 3] == bottom].tolist()) if bottom < height else set()
        still_open = {}
        for root, members in groups.items():
            value = open_regions[members[0]][0] if members[0] in open_regions else values[members[0] - ids[0]]
            parts = [p for m in members for p in (open_regions[m][1] if m in open_regions else [polygons[m - ids[0]]])]
            if continues.intersection(members):
                still_open[root] = (value, parts)
            else:
                yield value, parts[0] if len(parts) == 1 else _union(parts)
        open_regions = still_open
        if bottom < height:
            roots = np.array([joins.find(int(i)) for i in ids], dtype=np.int64)
            last = _edge_ids(polygons, bounds[:, 3] == bottom, np.arange(len(ids)), bottom, width)
            below_ids = np.where(last >= 0, roots[np.maximum(last, 0)] if len(roots) else -1, -1)
            below_row = band[-1]


def _polygon(rings: list) -> shapely.Polygon:
    """A polygon from GeoJSON rings, each read as one array (a few times faster than
    ``shapely.geometry.shape``, which walks the coordinates one by one)."""
    return shapely.Polygon(np.asarray(rings[0]), [np.asarray(hole) for hole in rings[1:]])


def _union(parts: list[shapely.Polygon]) -> shapely.Polygon:
    """The parts of one 4-connected region share whole pixel edges, so their union is one polygon
    (holes kept); the vertices are integers, which floating-point overlay handles exactly."""
    return shapely.union_all(parts)


def _edge_ids(polygons: np.ndarray, touching: np.ndarray, ids: np.ndarray, y: int, width: int) -> np.ndarray:
    """For each column, the id of the polygon (among those ``touching`` the band's edge at ``y``)
    whose pixel lies beside that edge in that column, or -1.

    A polygon's pixels along the band's top (or bottom) row are exactly where its exterior ring
    runs along that line (no hole can reach the band's edge), so the ring's horizontal sides at
    ``y`` give the columns without rasterising anything."""
    found = np.full(width, -1, dtype=np.int64)
    chosen = np.flatnonzero(touching)
    if not len(chosen):
        return found
    coords, ring = shapely.get_coordinates(shapely.get_exterior_ring(polygons[chosen]), return_index=True)
    along = (ring[1:] == ring[:-1]) & (coords[1:, 1] == y) & (coords[:-1, 1] == y)
    starts = np.minimum(coords[:-1, 0], coords[1:, 0])[along].astype(np.int64)
    stops = np.maximum(coords[:-1, 0], coords[1:, 0])[along].astype(np.int64)
    for start, stop, owner in zip(starts, stops, ids[chosen[ring[:-1][along]]]):
        found[start:stop] = owner
    return found


class UnionFind:
    """Which ids have been joined: a disjoint-set forest over ints, created as they are named."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:
            self.parent[x], x = root, self.parent.get(x, x)
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
