"""The store's ``tilepipe`` attribute as a typed document (:mod:`tilepipe.store_info`): the
documents stores already hold read and write back unchanged, key for key and in order."""

from __future__ import annotations

import json

import zarr

from tilepipe.grid import TileGrid
from tilepipe.partition import Plan
from tilepipe.sink import MaskStore
from tilepipe.store_info import Fingerprint, StoreInfo

FINGERPRINT = {
    "input": {"path": "/data/rmnp-rgb.tif", "format": "GTiff", "height": 600, "width": 800, "depth": None,
              "bands_used": [1, 2, 3], "dtype": "uint8", "scaling": {"method": "dtype", "low": [0.0], "high": [255.0],
                                                                    "sample": "dtype range", "clip": True}},
    "content": {"kind": "file", "size": 612930, "modified": "2026-12-04T17:52:17+00:00", "sampled_sha256": "41aa27f0"},
    "geometry_sha256": "334f4131",
    "plan": {"tile": [512, 512], "overlap": 64, "output_stride": 1, "chunk_size": 512, "block_size": 8192,
             "blending": "gaussian", "probabilities": False},
    "model": {"architecture": "standin", "weights": "none", "num_classes": 4},
    "engine": {"device_type": "cpu", "precision": "fp32"},
}
"""A fingerprint as a run of the version before this module wrote it (keys in its order)."""
WRITTEN = {"input": "/data/rmnp-rgb.tif", "options": {"tile_size": 512, "bands": None},
           "model": {"architecture": "standin"}, "fingerprint": FINGERPRINT, "format": "tilepipe-mask/1",
           "complete": True, "run_id": "0123456789ab", "summary": {"status": "complete"}}
"""A finished run's whole document, as stores hold it, in the order its writes left the keys."""


def test_a_stored_document_reads_into_fields_and_writes_back_unchanged():
    info = StoreInfo.from_json(json.loads(json.dumps(WRITTEN)))
    assert (info.input, info.run_id, info.complete, info.summary) == ("/data/rmnp-rgb.tif", "0123456789ab", True,
                                                                       {"status": "complete"})
    assert info.fingerprint.engine == {"device_type": "cpu", "precision": "fp32"}
    assert info.fingerprint.content["kind"] == "file" and info.extra == {} == info.fingerprint.extra
    written = info.to_json()
    assert json.dumps(written) == json.dumps(WRITTEN)  # the same keys, values and order


def test_what_a_store_made_without_a_run_holds():
    """A store made by ``MaskStore.create`` alone holds only the three keys a store always has."""
    assert StoreInfo(run_id="r0").to_json() == {"format": "tilepipe-mask/1", "complete": False, "run_id": "r0"}
    assert StoreInfo.from_json({"format": "tilepipe-mask/1", "complete": False, "run_id": None}) == StoreInfo()


def test_older_and_unknown_keys_survive_a_rewrite():
    """A fingerprint from before ``content`` existed reads with ``content`` None and writes without
    it; keys this version does not know are written back where they were kept."""
    old = {**WRITTEN, "fingerprint": {k: v for k, v in FINGERPRINT.items() if k != "content"}, "recipe": "fields-v2"}
    info = StoreInfo.from_json(old)
    assert info.fingerprint.content is None and info.extra == {"recipe": "fields-v2"}
    assert info.to_json() == old
    assert Fingerprint.from_json({**FINGERPRINT, "seed": 3}).to_json() == {**FINGERPRINT, "seed": 3}


def test_a_store_written_before_opens_and_its_writes_keep_the_document(tmp_path):
    """A store whose attribute was written as a plain dict (as every store before this module):
    the handle reads it, and claiming it and marking it complete change only those fields."""
    url = str(tmp_path / "old.zarr")
    MaskStore.create(url, Plan(64, 64, TileGrid(32, 8, 1), chunk_size=32, block_size=64), 4, False, attrs={})
    zarr.open_group(url, mode="r+").attrs["tilepipe"] = {**WRITTEN, "complete": False, "recipe": "fields-v2"}
    store = MaskStore.open(url, mode="r+")
    assert store.info.fingerprint.plan["blending"] == "gaussian" and not store.is_complete
    store.claim("fedcba987654")
    store.mark_complete()
    stored = zarr.open_group(url, mode="r").attrs["tilepipe"]
    assert stored == {**WRITTEN, "run_id": "fedcba987654", "recipe": "fields-v2"}
    assert list(stored) == [*WRITTEN, "recipe"]
