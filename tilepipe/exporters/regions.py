"""Polygons of a mask, one per connected region of a class, built chunk row by chunk row.

``rasterio.features.shapes`` on the whole mask would give the answer but hold the whole raster
(and every polygon of it as GeoJSON) in memory. Here each band of whole chunk rows is polygonised
a piece of whole chunks at a time; regions that cross a seam between pieces are joined within
the band, and regions cut by the band's lower edge stay *open*. At the next band, the pixels
either side of the seam say which open regions continue into which new polygons (same class,
adjacent pixels): a union-find joins them, and a region is emitted, its parts unioned into one
polygon (holes kept), as soon as none of it touches the lower edge of the band just read. Memory
holds one piece of pixels, one band's polygons and the parts of the regions still open across
its lower edge, never the raster.

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

from ..labels import NO_LABEL


def region_polygons(mask, band_rows: int, piece_cols: int,
                    classes: set[int] | None = None) -> Iterator[tuple[int, shapely.Polygon]]:
    """``(class, polygon)`` for each connected region of ``mask`` (a 2-D array-like read by
    slices, e.g. a Zarr array), reading ``band_rows`` x ``piece_cols`` pieces; NO_LABEL and
    classes outside ``classes`` (when given) are not regions."""
    height, width = mask.shape
    open_regions: dict[int, tuple[int, list[shapely.Polygon]]] = {}  # id -> (class, parts)
    below_ids = below_row = None  # the open regions' ids and labels along the last row read
    next_id = 0
    for top in range(0, height, band_rows):
        bottom = min(top + band_rows, height)
        band = _Band(mask, top, bottom, piece_cols, classes)
        ids = np.arange(next_id, next_id + len(band.values))
        next_id += len(ids)
        joins = UnionFind()
        for a, b in band.seam_pairs(ids):
            joins.union(a, b)
        if below_ids is not None:
            top_ids = band.edge_ids(ids, top, side=1)
            seam = (below_row == band.first_row) & band.first_kept & (below_ids >= 0) & (top_ids >= 0)
            for a, b in np.unique(np.stack([below_ids[seam], top_ids[seam]], axis=1), axis=0):
                joins.union(int(a), int(b))
        root = {member: joins.find(member) for member in [*open_regions, *ids.tolist()]}
        groups: dict[int, list[int]] = {}
        for member, its_root in root.items():
            groups.setdefault(its_root, []).append(member)
        continues = set(ids[band.bounds[:, 3] == bottom].tolist()) if bottom < height else set()
        still_open = {}
        for group, members in groups.items():
            value = open_regions[members[0]][0] if members[0] in open_regions else band.values[members[0] - ids[0]]
            parts = [p for m in members
                     for p in (open_regions[m][1] if m in open_regions else [band.polygons[m - ids[0]]])]
            if continues.intersection(members):
                still_open[group] = (value, parts)
            else:
                yield value, parts[0] if len(parts) == 1 else _union(parts)
        open_regions = still_open
        if bottom < height:
            roots = np.array([root[i] for i in ids.tolist()], dtype=np.int64)
            last = band.edge_ids(np.arange(len(ids)), bottom, side=3)
            below_ids = np.where(last >= 0, roots[np.maximum(last, 0)] if len(roots) else -1, -1)
            below_row = band.last_row


class _Band:
    """One band of whole rows, polygonised ``piece_cols`` columns at a time (GDAL's polygoniser
    slows down as rows widen, and one piece's pixels are all it holds): the pieces' polygons,
    their class values and bounds, and the pixels along the band's edges and the pieces' seams."""

    def __init__(self, mask, top: int, bottom: int, piece_cols: int, classes: set[int] | None):
        width = mask.shape[1]
        self.seams: list[tuple[int, np.ndarray, np.ndarray]] = []  # (x, labels left of x, right of x), kept pixels only
        found, rows, last_column = [], [], None
        for left in range(0, width, piece_cols):
            piece = np.asarray(mask[top:bottom, left:left + piece_cols])
            keep = piece != NO_LABEL
            if classes is not None:
                keep &= np.isin(piece, list(classes))
            found += [(int(value), _polygon(geom["coordinates"])) for geom, value in
                      features.shapes(piece, mask=keep, connectivity=4, transform=Affine.translation(left, top))]
            kept = np.where(keep, piece, NO_LABEL)
            if last_column is not None:
                self.seams.append((left, last_column, kept[:, 0]))
            last_column = kept[:, -1]
            rows.append((kept[0], kept[-1]))
        self.top = top
        self.first_row = np.concatenate([first for first, _ in rows])
        self.first_kept = self.first_row != NO_LABEL
        self.last_row = np.concatenate([last for _, last in rows])
        self.values = [v for v, _ in found]
        self.polygons = np.array([p for _, p in found], dtype=object)
        self.bounds = shapely.bounds(self.polygons) if found else np.zeros((0, 4))
        self.width, self.height = width, bottom - top

    def edge_ids(self, ids: np.ndarray, line: int, side: int) -> np.ndarray:
        """For each pixel along ``line`` (a row boundary: the band's top or bottom; or a column
        boundary: a seam between pieces), the id of the polygon whose ``side`` lies on the line
        and holds that pixel, or -1. ``side`` is a column of ``shapely.bounds``: 0 a polygon's
        left, 1 its top, 2 its right, 3 its bottom.

        A polygon's pixels along a piece's edge are exactly where its exterior ring runs along
        that line (no hole reaches a piece's edge), so the ring's sides on the line give them
        without rasterising anything."""
        fixed, moving = (0, 1) if side in (0, 2) else (1, 0)
        length, offset = (self.height, self.top) if fixed == 0 else (self.width, 0)
        found = np.full(length, -1, dtype=np.int64)
        chosen = np.flatnonzero(self.bounds[:, side] == line)
        if not len(chosen):
            return found
        coords, ring = shapely.get_coordinates(shapely.get_exterior_ring(self.polygons[chosen]), return_index=True)
        along = (ring[1:] == ring[:-1]) & (coords[1:, fixed] == line) & (coords[:-1, fixed] == line)
        starts = np.minimum(coords[:-1, moving], coords[1:, moving])[along].astype(np.int64) - offset
        stops = np.maximum(coords[:-1, moving], coords[1:, moving])[along].astype(np.int64) - offset
        for start, stop, owner in zip(starts, stops, ids[chosen[ring[:-1][along]]]):
            found[start:stop] = owner
        return found

    def seam_pairs(self, ids: np.ndarray):
        """``(left id, right id)`` of the polygons joined across each seam between pieces: same
        class in horizontally adjacent pixels."""
        for x, left, right in self.seams:
            left_ids, right_ids = self.edge_ids(ids, x, side=2), self.edge_ids(ids, x, side=0)
            same = (left == right) & (left != NO_LABEL) & (left_ids >= 0) & (right_ids >= 0)
            for a, b in np.unique(np.stack([left_ids[same], right_ids[same]], axis=1), axis=0):
                yield int(a), int(b)


def _polygon(rings: list) -> shapely.Polygon:
    """A polygon from GeoJSON rings, each read as one array (a few times faster than
    ``shapely.geometry.shape``, which walks the coordinates one by one)."""
    return shapely.Polygon(np.asarray(rings[0]), [np.asarray(hole) for hole in rings[1:]])


def _union(parts: list[shapely.Polygon]) -> shapely.Polygon:
    """One region's parts as one polygon. The parts share whole pixel edges along the seams, but
    none of their holes reaches a seam (a hole lies inside its band) nor holds another part of the
    region (it would be joined to this part inside the band): so the union is the union of the
    parts' shells, with its own holes (rings closed across seams) and every part's holes. Unioning
    the shells alone keeps a region with thousands of holes (a background class) from being
    overlaid hole by hole. The vertices are integers, which floating-point overlay handles exactly."""
    merged = shapely.union_all(shapely.polygons(shapely.get_exterior_ring(parts)))
    return shapely.Polygon(merged.exterior, [*merged.interiors, *(hole for part in parts for hole in part.interiors)])


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
