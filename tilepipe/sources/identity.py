"""What identifies an input's content cheaply, so ``--resume`` can tell that the pixels it would
add come from the same image as the blocks already stored.

Hashing a whole scene would cost as much as reading it, so each kind of input is identified by
what it can give cheaply:

- a local file: its size and modification time, and a SHA-256 of SAMPLES byte ranges of
  SAMPLE_BYTES spread evenly through it (the whole file when it is that small). Only the size and
  the sampled bytes decide: a ``touch`` (or a copy that keeps the bytes) is the same content, and a
  rewrite in place with other pixels differs even when its modification time was put back. A
  change that falls entirely between the sampled ranges of an uncompressed file would go unseen;
  a rewrite by GDAL of a compressed or tiled file moves its tile offsets, which sit in the
  sampled header.
- DICOM: each instance's SOPInstanceUID and file size (a new series or an edited file gets a new
  UID; a file rewritten under the same UID nearly always changes size).
- a URL: the ETag, else the Last-Modified time, and the size, as the server reports them
  (fsspec's ``info()``); where the server gives neither, nothing can be checked, and the identity
  says so.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone

import fsspec

from ..errors import first_line

SAMPLES = 16
SAMPLE_BYTES = 64 * 1024
"""16 ranges of 64 KiB: 1 MiB read per run, a few milliseconds on a local disk."""
ETAG_KEYS = ("ETag", "etag")
MODIFIED_KEYS = ("Last-Modified", "LastModified", "last_modified", "updated", "mtime")


def content_identity(source) -> dict:
    """The identity of ``source``'s content: a JSON dict whose ``kind`` says which of the forms
    in the module docstring it is."""
    if source.format == "DICOM":
        return dicom_identity([(i.sop_instance_uid, i.path) for i in source.layout.instances])
    path = source.path.removeprefix("file://")
    return url_identity(path) if "://" in path else file_identity(path)


def sample_offsets(size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` byte ranges to hash: the whole file, or SAMPLES ranges of SAMPLE_BYTES,
    the first at the start and the last at the end (the header and the last tiles)."""
    if size <= SAMPLES * SAMPLE_BYTES:
        return [(0, size)]
    step = (size - SAMPLE_BYTES) / (SAMPLES - 1)
    return [(round(k * step), round(k * step) + SAMPLE_BYTES) for k in range(SAMPLES)]


def file_identity(path: str) -> dict:
    stat = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for start, stop in sample_offsets(stat.st_size):
            f.seek(start)
            digest.update(f.read(stop - start))
    return {"kind": "file", "size": stat.st_size,
            "modified": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(timespec="seconds"),
            "sampled_sha256": digest.hexdigest()}


def dicom_identity(instances: list[tuple[str, str]]) -> dict:
    """``instances``: ``(SOPInstanceUID, path)`` of every file the image is read from."""
    uids, sizes = hashlib.sha256(), hashlib.sha256()
    for uid, path in sorted(instances):
        uids.update(f"{uid}\n".encode())
        sizes.update(f"{uid} {os.path.getsize(path)}\n".encode())
    return {"kind": "dicom", "files": len(instances), "sop_instance_uids_sha256": uids.hexdigest(),
            "sizes_sha256": sizes.hexdigest()}


def url_identity(url: str) -> dict:
    try:
        fs, path = fsspec.core.url_to_fs(url)
        info = fs.info(path)
    except Exception as exc:  # noqa: BLE001 - a protocol fsspec lacks, or a server that answers no HEAD
        return {"kind": "url", "unverifiable": f"no file information from the server ({first_line(exc)})"}
    etag = next((str(info[k]) for k in ETAG_KEYS if info.get(k)), None)
    modified = next((str(info[k]) for k in MODIFIED_KEYS if info.get(k)), None)
    identity = {"kind": "url", "size": info.get("size"), "etag": etag, "last_modified": modified}
    if etag is None and modified is None:
        identity["unverifiable"] = "the server gives neither an ETag nor a Last-Modified time"
    return identity


def content_changes(then: dict | None, now: dict, path: str) -> tuple[list[str], list[str]]:
    """``(changes, notes)`` between the identity recorded when a store was made and the input's
    now. A change refuses a resume; a note (a modification time alone, an input that cannot be
    verified) is only said."""
    if not then:
        return [f"input identity (none recorded: the store was made by an earlier tilepipe, whose "
                f"stores cannot prove that {path} is unchanged)"], []
    if then.get("kind") != now.get("kind"):
        return [f"kind of input ({then.get('kind')} then, {now.get('kind')} now)"], []
    if then.get("unverifiable") or now.get("unverifiable"):
        return [], [f"{path}: cannot check that the input is unchanged: {now.get('unverifiable') or then['unverifiable']}"]
    kind = now["kind"]
    if kind == "dicom":
        if then["sop_instance_uids_sha256"] != now["sop_instance_uids_sha256"]:
            return [f"input: {path} holds other DICOM instances (their SOPInstanceUIDs differ; "
                    f"{then['files']} file(s) then, {now['files']} now)"], []
        if then["sizes_sha256"] != now["sizes_sha256"]:
            return [f"input: {path}: the same SOPInstanceUIDs, but files of other sizes (rewritten)"], []
        return [], []
    changes = [f"{what} ({then.get(key)!r} then, {now.get(key)!r} now)"
               for key, what in (("size", "size"), ("etag", "ETag"), ("last_modified", "Last-Modified"))
               if key in now and then.get(key) != now.get(key)]
    if kind == "url":
        if now.get("etag") and then.get("etag") == now["etag"]:  # the ETag speaks for the content
            changes = [c for c in changes if not c.startswith("Last-Modified")]
        return ([f"input: {path} changed on the server: {'; '.join(changes)}"] if changes else []), []
    if then["sampled_sha256"] != now["sampled_sha256"]:
        when = ("its modification time is the same" if then["modified"] == now["modified"]
                else f"modified {then['modified']} then, {now['modified']} now")
        changes.append(f"content (sampled bytes differ; {when})")
    if changes:
        return [f"input: {path} was rewritten: {'; '.join(changes)}"], []
    if then["modified"] != now["modified"]:
        return [], [f"{path}: modified {then['modified']} then, {now['modified']} now, but its size and sampled "
                    "bytes are the same: resuming"]
    return [], []
