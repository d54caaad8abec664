"""Where a chunk is written: the Zarr v3 store that holds the mask and the record of the run.

Layout of a store (``zarr.open_group(path)``)::

    mask            (y, x), (z, y, x) or (volume, z, y, x) uint8, NO_LABEL (255) where the source has no data
    probabilities   (class, y, x), (z, class, y, x) or (volume, z, class, y, x) uint8, p * PROBABILITY_SCALE
                    (only with --probabilities)
    blocks          one uint8 per block: 0 not done, 1 (STORED) once its chunks are stored,
                    2 (NO_DATA) done with no valid pixel, so no chunk stored (a 4-D series'
                    planes run volume-major: plane v * z + k)
    class_tally     per block, its pixels (and geodesic m²) per label value (:mod:`tilepipe.measures`)
    x, y            pixel-centre coordinates (GeoTIFF with a north-up transform)

The run summary is kept in the group attributes and written beside the store as
``<name>.summary.json`` and ``<name>.summary.md`` (``scene_mask.zarr`` -> ``scene_mask.summary.md``).

Every block core is a whole number of chunks, so one task owns each chunk: no locks, no
read-modify-write. A block's record is set only after its chunks are written (every one of them:
the empty-chunk check is off, see :func:`without_empty_chunk_check`), so a block recorded STORED
whose chunk is missing lost a write (:meth:`MaskStore.blocks_missing_chunks`), and the group
attribute ``tilepipe.complete`` becomes true only at the very end of a run, so a reader (or
``--resume``) can always tell a finished store from a partial one.

The group attribute ``tilepipe`` is one document, declared in :mod:`tilepipe.store_info`
(:class:`~tilepipe.store_info.StoreInfo`): :attr:`MaskStore.info` reads it, :meth:`MaskStore.update_info`
rewrites it whole. Its ``run_id`` names the run that writes the store (set when a run creates or
resumes it). A handle opened for a run writes only while the store still names that run: if the
store was replaced or taken over meanwhile, it refuses instead of writing into someone else's
arrays (which may have another shape or chunking).

Every write (chunks, records, attributes, the summary files) is retried on a transient error
(:mod:`tilepipe.retry`); a handle counts its retries in ``retries``, under the block's index for a
block's writes.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace

import fsspec
import numpy as np
import zarr

from .errors import TilepipeError, first_line
from .grid import Block
from .labels import NO_LABEL, PROBABILITY_SCALE
from .measures import BlockTally, create_tally
from .partition import Plan
from .retry import RetryCount, retried
from .store_info import STORE_FORMAT, StoreInfo

STORED, NO_DATA = 1, 2
"""A finished block's record: its chunks are stored, or it has no valid pixel and no chunk."""


def local_or_url(url: str) -> str:
    """``file://`` URLs become plain paths: zarr's LocalStore creates folders, its fsspec store does not."""
    return url.removeprefix("file://")


def fs_path(url: str):
    """``(fsspec filesystem, path in it)`` for a store URL or local path."""
    try:
        return fsspec.core.url_to_fs(local_or_url(url))
    except (ValueError, ImportError) as exc:  # an unknown protocol, or one whose package is missing
        raise TilepipeError(f"{url}: cannot use this location ({first_line(exc)})") from None


def beside(url: str, suffix: str):
    """``(filesystem, path)`` of the file ``<name>.<suffix>`` next to the store at ``url``
    (``scene_mask.zarr`` -> ``scene_mask.<suffix>``): summaries, the timeline, the lease."""
    fs, path = fs_path(url)
    return fs, f"{path.rstrip('/').removesuffix('.zarr')}.{suffix}"


def check_output(url: str, overwrite: bool) -> bool:
    """Refuse to clobber: an existing output needs ``overwrite``, and even then only a tilepipe
    store (or an empty folder) may be replaced, never an unrelated file or directory. Without
    ``overwrite``, the store of a run that did not finish suggests ``--resume`` first: replacing
    it would throw its finished blocks away.
    Returns whether something is there to replace; deletes nothing."""
    fs, path = fs_path(url)
    if not fs.exists(path):
        return False
    meta = f"{path}/zarr.json"
    tilepipe = json.loads(fs.cat(meta)).get("attributes", {}).get("tilepipe") if fs.exists(meta) else None
    if not overwrite:
        info = StoreInfo.from_json(tilepipe) if tilepipe is not None else None
        if info is not None and not info.complete:
            blocks = MaskStore.open(url).blocks[...]
            unfinished = f"{url}: holds a run that did not finish ({np.count_nonzero(blocks)} of {blocks.size} blocks done)"
            if info.fingerprint is None or info.fingerprint.content is None:
                raise TilepipeError(f"{unfinished}, made by an earlier tilepipe that did not record its input's "
                                    "content, so it cannot be resumed; pass --overwrite to start again")
            raise TilepipeError(f"{unfinished}; finish it with --resume (or pass --overwrite to start again)")
        raise TilepipeError(f"{url}: already exists; pass --overwrite to replace it")
    if tilepipe is None and not (fs.isdir(path) and not fs.ls(path)):
        raise TilepipeError(f"{url}: exists and is not a tilepipe store; refusing to overwrite it")
    return True


def remove_output(url: str) -> None:
    fs, path = fs_path(url)
    fs.rm(path, recursive=True)


def _gdal_geotransform(affine: list[float]) -> list[float]:
    """rasterio's (a, b, c, d, e, f) to GDAL's (c, a, b, f, d, e)."""
    a, b, c, d, e, f = affine
    return [c, a, b, f, d, e]


def write_grid_mapping(group: zarr.Group, array: str, crs_wkt: str, transform: list[float]) -> None:
    """A CF grid mapping beside ``array``, so xarray/rioxarray find the CRS:
    ``array.grid_mapping`` -> ``spatial_ref`` (also used for each pyramid level)."""
    ref = group.create_array("spatial_ref", shape=(), dtype="int32", fill_value=0, dimension_names=[], overwrite=True,
                             attributes={"crs_wkt": crs_wkt, "spatial_ref": crs_wkt,
                                         "GeoTransform": " ".join(map(str, _gdal_geotransform(transform)))})
    ref[...] = 0
    group[array].attrs.update({"grid_mapping": "spatial_ref", "coordinates": "spatial_ref"})


def without_empty_chunk_check(array: zarr.Array) -> zarr.Array:
    """The array with zarr's "is this chunk all fill value? then do not store it" check off.

    A block writes whole chunks of labels, so the check (an array comparison per chunk, a fifth to a
    third of a block's write time here) only costs; all-no-data blocks are not written at all
    (``write_block(block, None)``, recorded NO_DATA). With the check off every chunk of a STORED
    block is in the store, which is what lets ``--resume`` tell a lost chunk from an empty one. The
    setting belongs to the handle and is not stored, so it is applied wherever a store is opened
    (``Array.with_config``: zarr >= 3.1.6)."""
    return array.with_config({"write_empty_chunks": True})


class MaskStore:
    """A tilepipe Zarr store, opened for writing blocks or for reading the result."""

    def __init__(self, url: str, group: zarr.Group, run_id: str | None = None):
        self.url = url
        self.group = group
        self.run_id = run_id
        """The run this handle writes for; None for a reader."""
        self.mask = without_empty_chunk_check(group["mask"])
        self.blocks = group["blocks"]
        self.probabilities = without_empty_chunk_check(group["probabilities"]) if "probabilities" in group else None
        self.tally = BlockTally.of(group)
        self.retries = RetryCount()

    def retried(self, action, what: str, key=None):
        """``action()`` retried on a transient error, counted in this handle's ``retries``."""
        return retried(action, f"{self.url}: {what}", self.retries, key)

    @classmethod
    def create(cls, url: str, plan: Plan, num_classes: int, probabilities: bool, attrs: dict,
               coordinates: dict[str, np.ndarray] | None = None, run_id: str | None = None,
               info: StoreInfo | None = None) -> MaskStore:
        """A new store (``mode="w"``: tried again whole after a transient error). ``attrs``: the
        group's attributes beside ``tilepipe``, which is ``info`` (the run's record), written
        incomplete and naming ``run_id``."""
        count = RetryCount()
        store = retried(lambda: cls._create(url, plan, num_classes, probabilities, attrs, coordinates, run_id, info),
                        f"{url}: creating the store", count)
        store.retries = count
        return store

    @classmethod
    def _create(cls, url: str, plan: Plan, num_classes: int, probabilities: bool, attrs: dict,
                coordinates: dict[str, np.ndarray] | None, run_id: str | None, info: StoreInfo | None) -> MaskStore:
        info = replace(info or StoreInfo(), format=STORE_FORMAT, complete=False, run_id=run_id)
        attrs = {**attrs, "tilepipe": info.to_json()}
        group = zarr.open_group(local_or_url(url), mode="w", zarr_format=3, attributes=attrs)  # attributes first: never a bare group
        plane = (plan.height, plan.width)
        chunks = (plan.chunk_size, plan.chunk_size)
        stack = plan.stack_shape
        stack_chunk = (1,) * len(stack)
        stack_dim = ["volume", "z"][-len(stack):] if stack else []
        group.create_array("mask", shape=stack + plane, chunks=stack_chunk + chunks, dtype="uint8",
                           fill_value=NO_LABEL, dimension_names=[*stack_dim, "y", "x"],
                           attributes={"long_name": "class label", "nodata": NO_LABEL})
        if probabilities:
            group.create_array("probabilities", shape=stack + (num_classes,) + plane,
                               chunks=stack_chunk + (num_classes,) + chunks, dtype="uint8", fill_value=0,
                               dimension_names=[*stack_dim, "class", "y", "x"],
                               attributes={"long_name": "class probability", "scale_factor": 1 / PROBABILITY_SCALE})
        group.create_array("blocks", shape=plan.block_grid_shape, chunks=(1,) * len(plan.block_grid_shape),
                           dtype="uint8", fill_value=0,
                           dimension_names=[*(["plane"] if plan.volumes else stack_dim), "block_row", "block_col"],
                           attributes={"description": "0 not done; 1 once the block's chunks are stored; "
                                                      "2 done with no valid pixel (no chunk stored)"})
        create_tally(group, plan.block_grid_shape)
        for name, values in (coordinates or {}).items():
            group.create_array(name, data=values, chunks=values.shape, dimension_names=[name])
        if attrs.get("crs_wkt"):
            write_grid_mapping(group, "mask", attrs["crs_wkt"], attrs["transform"])
        return cls(url, group, run_id)

    @classmethod
    def open(cls, url: str, mode: str = "r", run_id: str | None = None) -> MaskStore:
        """Open for reading, or (``run_id``) for writing the blocks of that run, which must be the
        run the store names."""
        try:
            group = zarr.open_group(local_or_url(url), mode=mode)
        except (FileNotFoundError, zarr.errors.BaseZarrError):
            raise TilepipeError(f"{url}: no Zarr store there") from None
        if "tilepipe" not in group.attrs:
            raise TilepipeError(f"{url}: a Zarr group, but not one tilepipe wrote")
        store = cls(url, group, run_id)
        store.check_owner()
        return store

    def claim(self, run_id: str) -> None:
        """Make ``run_id`` the store's writer (a resumed run); its handles refuse any other run.
        The store is not complete again until that run ends well: it rewrites blocks, the pyramid
        and the summary."""
        self.run_id = run_id
        self.update_info(run_id=run_id, complete=False)

    def update_info(self, **values) -> None:
        """Rewrite the ``tilepipe`` attribute with the fields ``values`` names changed (one whole document)."""
        info = replace(self.info, **values).to_json()
        self.retried(lambda: self.group.attrs.__setitem__("tilepipe", info), "writing its attributes")

    def check_owner(self) -> None:
        """Refuse to write unless the store, as stored now (not as this handle last saw it), still
        names this handle's run. A reader's handle (no run) writes nothing: nothing to check."""
        if self.run_id is None:
            return
        fs, path = fs_path(self.url)
        try:
            stored = StoreInfo.from_json(json.loads(self.retried(lambda: fs.cat(f"{path}/zarr.json"),
                                                                 "reading its attributes"))["attributes"]["tilepipe"]).run_id
        except (FileNotFoundError, KeyError, ValueError):
            stored = None
        if stored != self.run_id:
            now = f"now belongs to run {stored}" if stored else "is gone or no longer a tilepipe store"
            raise TilepipeError(f"{self.url}: the store {now}, not to run {self.run_id}: it was replaced or taken "
                                "over while this run was writing; nothing more is written for this run")

    @property
    def info(self) -> StoreInfo:
        """The store's record of its run, as stored (read again at each use)."""
        return StoreInfo.from_json(dict(self.group.attrs["tilepipe"]))

    @property
    def is_complete(self) -> bool:
        return bool(self.info.complete)

    def write_block(self, block: Block, labels: np.ndarray | None, probabilities: np.ndarray | None = None) -> None:
        """Write one block core (whole chunks) and then its completion record. ``labels=None``:
        a block with no valid pixel, whose chunks keep the fill value (NO_LABEL): only the record
        (NO_DATA)."""
        core = block.core
        where = (slice(core.row, core.row_stop), slice(core.col, core.col_stop))
        lead = () if block.plane is None else self.stack_index(block.plane)
        self.check_owner()
        index = tuple(block.index)
        if labels is not None:
            self.retried(lambda: self.mask.__setitem__(lead + where, labels), f"block {index}", index)
            if self.tally is not None:
                self.retried(lambda: self.tally.write(block.index, labels, core.row), f"tally of block {index}", index)
        if probabilities is not None and self.probabilities is not None:
            self.retried(lambda: self.probabilities.__setitem__(lead + (slice(None),) + where, probabilities),
                         f"block {index}", index)
        self.check_owner()  # again: a run ousted while its chunks were written must not record them as done
        self.retried(lambda: self.blocks.__setitem__(index, NO_DATA if labels is None else STORED),
                     f"record of block {index}", index)

    def stack_index(self, plane: int) -> tuple[int, ...]:
        """The mask's leading index of a plane: ``(plane,)``, or ``(volume, z)`` in a 4-D store."""
        return divmod(plane, self.mask.shape[1]) if self.mask.ndim == 4 else (plane,)

    def done_blocks(self) -> np.ndarray:
        return self.blocks[...] > 0

    def chunk_keys(self, block: Block) -> list[str]:
        """The store keys of every chunk a block with valid pixels writes (mask, and probabilities
        when stored: a block is one chunk row of a strip, whole chunks wide; and its class tally,
        one chunk of its own)."""
        core, size = block.core, self.mask.chunks[-1]
        lead = () if block.plane is None else self.stack_index(block.plane)
        keys = []
        if self.tally is not None:
            tally = self.tally.array
            keys.append(f"{tally.path}/{tally.metadata.encode_chunk_key(tuple(block.index) + (0, 0))}")
        for row in range(core.row // size, -(-core.row_stop // size)):
            for col in range(core.col // size, -(-core.col_stop // size)):
                keys.append(f"{self.mask.path}/{self.mask.metadata.encode_chunk_key(lead + (row, col))}")
                if self.probabilities is not None:
                    coords = lead + (0, row, col)
                    keys.append(f"{self.probabilities.path}/{self.probabilities.metadata.encode_chunk_key(coords)}")
        return keys

    def blocks_missing_chunks(self, plan: Plan) -> list[tuple[int, ...]]:
        """The blocks recorded STORED of which a chunk is not in the store (an object store that
        lost a write, a copy cut short), found with one listing of the store. NO_DATA blocks store
        no chunk and are never counted. (A store made before NO_DATA existed is never resumed: it
        recorded no content identity either.)"""
        fs, path = fs_path(self.url)
        root = path.rstrip("/") + "/"
        present = {p.removeprefix(root) for p in fs.find(root)}
        stored = (tuple(int(i) for i in index) for index in np.argwhere(self.blocks[...] == STORED))
        return [index for index in stored if not present.issuperset(self.chunk_keys(plan.block(index)))]

    def save_summary(self, summary_json: dict, markdown: str) -> list[str]:
        """Keep the summary in the store's attributes (it travels with the store) and write
        ``summary.json`` and ``summary.md`` beside the store, named after it. Files inside the
        store would make zarr warn about unknown objects whenever a group is listed."""
        self.check_owner()
        self.update_info(summary=summary_json)
        return [self.write_beside(suffix, text.encode()) for suffix, text in
                (("summary.json", json.dumps(summary_json, indent=2)), ("summary.md", markdown))]

    def write_beside(self, suffix: str, data: bytes) -> str:
        """Write the file ``<name>.<suffix>`` next to the store whole; returns its path."""
        fs, path = self.beside(suffix)
        try:
            self.retried(lambda: fs.pipe_file(path, data), f"writing {path}")
        except OSError:
            with contextlib.suppress(OSError):  # a file cut short (a full disk) is not left to be read
                fs.rm(path)
            raise
        return path

    def beside(self, suffix: str):
        """``(filesystem, path)`` of the file ``<name>.<suffix>`` next to the store."""
        return beside(self.url, suffix)

    @property
    def summary(self) -> dict:
        summary = self.info.summary
        if summary is None:
            raise TilepipeError(f"{self.url}: holds no run summary (the run did not get that far)")
        return summary

    def mark_complete(self) -> None:
        self.check_owner()
        self.update_info(complete=True)
