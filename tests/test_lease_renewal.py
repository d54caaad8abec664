"""A run ousted from its store while it is live: the lease's renewal cannot overwrite the new
holder's lease, and a block whose chunks it was writing is not recorded.

Interleavings are forced with hooks at known points (inside a renewal, inside a block's chunk
writes), never with sleeps raced against another thread.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from tilepipe import lease
from tilepipe.errors import TilepipeError
from tilepipe.grid import TileGrid
from tilepipe.partition import Plan
from tilepipe.sink import MaskStore


@pytest.fixture
def quiet_heartbeat(monkeypatch):
    """Renewals only when a test calls them."""
    monkeypatch.setattr(lease, "RENEW_SECONDS", 3600.0)


def test_a_takeover_during_a_renewal_leaves_one_holder(tmp_path, quiet_heartbeat, monkeypatch):
    """Run A's lease looks dead (not renewed for longer than the timeout) when run B looks, and A
    renews at that moment: B's takeover lands between A's check and A's write. Exactly one of
    them may hold the store afterwards, and the lease file must name that one."""
    url = str(tmp_path / "out.zarr")
    a = lease.Lease.acquire(url, "aaaaaaaaaaaa")
    path = tmp_path / "out.lease.json"
    stale = {**json.loads(path.read_text()), "renewed": time.time() - lease.TIMEOUT_SECONDS - 5}
    path.write_text(json.dumps(stale))
    outcome = {}

    def take_over():
        try:
            outcome["b"] = lease.Lease.acquire(url, "bbbbbbbbbbbb")
        except TilepipeError as exc:
            outcome["refused"] = str(exc)

    this_process = lease.Holder.this_process.__func__
    hooked = []

    def stamp_with_b_racing(cls, run_id, started=None):
        """A's renewal has read its lease and is about to write the new stamp: B tries now."""
        if run_id == "aaaaaaaaaaaa" and not hooked:
            hooked.append(True)
            b = threading.Thread(target=take_over)
            b.start()
            b.join(2.0)  # B finishes, or waits for A's lock (then it goes on once A is done)
            outcome["b_thread"] = b
        return this_process(cls, run_id, started)

    monkeypatch.setattr(lease.Holder, "this_process", classmethod(stamp_with_b_racing))
    a.renew()
    outcome["b_thread"].join(30)
    written = json.loads(path.read_text())["run_id"]
    holders = [run for run, holds in (("aaaaaaaaaaaa", a.lost is None), ("bbbbbbbbbbbb", "b" in outcome)) if holds]
    assert holders == [written]
    for held in (a, outcome.get("b")):
        if held is not None and held.lost is None:
            held.release()
    assert not path.exists()


def test_the_lease_is_still_renewed_released_and_taken_over(tmp_path, quiet_heartbeat):
    url = str(tmp_path / "out.zarr")
    path = tmp_path / "out.lease.json"
    a = lease.Lease.acquire(url, "aaaaaaaaaaaa")
    before = json.loads(path.read_text())["renewed"]
    a.renew()
    assert json.loads(path.read_text())["renewed"] >= before and a.lost is None
    with pytest.raises(TilepipeError, match="run aaaaaaaaaaaa"):
        lease.Lease.acquire(url, "bbbbbbbbbbbb")
    path.write_text(json.dumps({**json.loads(path.read_text()), "renewed": 0.0}))  # dead now
    b = lease.Lease.acquire(url, "bbbbbbbbbbbb")
    a.renew()
    assert a.lost is not None and a.lost.run_id == "bbbbbbbbbbbb"
    assert json.loads(path.read_text())["run_id"] == "bbbbbbbbbbbb"
    a.release()  # not A's any more: left alone
    assert path.exists()
    b.release()
    assert not path.exists()
    path.write_text("not a lease")  # foreign or corrupt: taken over
    lease.Lease.acquire(url, "cccccccccccc").release()


def test_a_block_being_written_when_its_run_is_ousted_is_not_recorded(tmp_path):
    """Run A writes a block; while its chunks are being written, run B takes the store over (as a
    --resume after A's lease expired does). A must refuse to record the block: B will write it."""
    plan = Plan(height=128, width=128, grid=TileGrid(tile_size=64, overlap=16, output_stride=8), chunk_size=64,
                block_size=64)
    url = str(tmp_path / "m.zarr")
    MaskStore.create(url, plan, 4, False, attrs={}, run_id="aaaaaaaaaaaa")
    a = MaskStore.open(url, mode="r+", run_id="aaaaaaaaaaaa")
    b = MaskStore.open(url, mode="r+")
    mask = a.mask

    class OustedMidWrite:
        """A's mask array: writes the chunks, then B claims the store."""

        def __setitem__(self, key, value):
            mask[key] = value
            b.claim("bbbbbbbbbbbb")

        def __getattr__(self, name):
            return getattr(mask, name)

    a.mask = OustedMidWrite()
    block = next(plan.blocks())
    with pytest.raises(TilepipeError, match="now belongs to run bbbbbbbbbbbb"):
        a.write_block(block, np.zeros((64, 64), np.uint8))
    assert not MaskStore.open(url).done_blocks().any()
