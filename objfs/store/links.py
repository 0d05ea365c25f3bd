"""Hard links: a second key naming the same bytes, counted so the bytes outlive every name but the last.

A link is a record of its own (its own id, key and version, so S3 lists
and reads each name as a key, and the DICOM index sees each) whose
``parts`` are the source version's blobs. The index keeps how many
versions share those blobs under ``settings`` ``links/<first blob id>``
(present only while two or more do). Retiring a version that shares its
blobs (delete, overwrite) lowers the count and writes no gc entry; the
last version to go writes them as usual (:meth:`GarbageMixin._queue_gc`),
so the collector and its rules are unchanged. ``rebuild-index`` recounts
from the records it restores and never takes a blob a live record still
names for garbage.

Retention and legal hold are the source version's, copied to the new
name: WORM applies to the bytes whichever name is used. Writing a new
version through one name replaces that name's bytes only (the other names
keep the version they share), as a copy-on-write filesystem's clone does.
Linked versions do not change tiers (the mover skips them).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .audit import audited
from .blobs import new_id
from .errors import InvalidArgument, KeyExists, NoSuchKey, PreconditionFailed
from .index import Txn, object_key
from .names import check_key
from .objects import ObjectInfo

if TYPE_CHECKING:
    from .engine import Principal, Store


def link_key(record: dict[str, Any]) -> bytes | None:
    """The ``settings`` key counting the versions that share ``record``'s blobs (None: it has none)."""
    parts = record.get("parts") or []
    return b"links/" + parts[0]["id"].encode() if parts else None


def shared_count(txn: Txn, record: dict[str, Any]) -> int:
    """How many versions share ``record``'s blobs (1 when it is their only owner)."""
    key = link_key(record)
    entry = txn.get("settings", key) if key is not None else None
    return int(entry["count"]) if entry else 1


def release_shared(txn: Txn, record: dict[str, Any]) -> bool:
    """Inside a retiring transaction: ``record`` lets go of its blobs; True when another version still holds them."""
    key = link_key(record)
    entry = txn.get("settings", key) if key is not None else None
    if not entry:
        return False
    left = int(entry["count"]) - 1
    if left <= 1:
        txn.delete("settings", key)
    else:
        txn.put("settings", key, {"count": left})
    return True


class LinksMixin:
    """Hard links of :class:`objfs.store.Store`."""

    @audited("link", target=lambda a, k, r: {"bucket": a[0], "key": a[2], "source": a[1]})
    def link_object(self: Store, bucket: str, src_key: str, dst_key: str, *, principal: Principal | None = None) -> ObjectInfo:
        """Give the current version of ``src_key`` a second name ``dst_key`` (a hard link): metadata only.

        Raises NoSuchKey, KeyExists when ``dst_key`` exists, InvalidArgument
        for a directory marker or an object without data.
        """
        check_key(src_key)
        check_key(dst_key)
        if src_key.endswith("/") or dst_key.endswith("/"):
            raise InvalidArgument("a directory cannot be linked")
        for _attempt in range(5):
            with self.index.read() as txn:
                settings = self._bucket(txn, bucket)
                source = txn.get("objects", object_key(bucket, src_key))
            if source is None or source.get("delete_marker"):
                raise NoSuchKey(f"{bucket}/{src_key} does not exist")
            if not source.get("parts"):
                raise InvalidArgument(f"{bucket}/{src_key} has no data to share")
            stamp = time.time_ns()
            object_id = new_id()
            version = object_id if settings.get("versioning") == "Enabled" else "null"
            new = dict(source, id=object_id, key=dst_key, version=version, seq=stamp, gen=stamp)
            new.pop("replica", None)
            garbage: list[dict[str, Any]] = []
            try:
                with self._meta_change([{"id": object_id, "bucket": bucket, "key": dst_key, "gen": stamp}]):
                    self._write_meta_files(new)  # the drives learn the new name before the index does
                    garbage = self._commit_link(bucket, src_key, source, new)
            except _LinkRaced:
                continue
            self._retire_files(garbage)
            return ObjectInfo.from_record(new)
        raise PreconditionFailed("the source changed during the link; try again")

    def _commit_link(self: Store, bucket: str, src_key: str, source: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
        with self.index.write() as txn:
            settings = self._bucket(txn, bucket)
            now = txn.get("objects", object_key(bucket, src_key))
            if now is None or now["id"] != source["id"] or now.get("gen") != source.get("gen"):
                raise _LinkRaced()
            dkey = object_key(bucket, new["key"])
            existing = txn.get("objects", dkey)
            if existing is not None and not existing.get("delete_marker"):
                raise KeyExists(f"{bucket}/{new['key']} exists already")
            garbage = self._retire_current(txn, settings, existing, None)
            txn.put("objects", dkey, new)
            key = link_key(source)
            assert key is not None
            txn.put("settings", key, {"count": shared_count(txn, source) + 1})
            for indexer in self.indexers:
                indexer.on_change(txn, None, new)
            self._records_changed(txn, None, new)  # a new name replicates as a new version
        return garbage

    def link_count(self: Store, info: ObjectInfo) -> int:
        """How many versions (names, and noncurrent versions) share ``info``'s bytes: its st_nlink on the mount."""
        with self.index.read() as txn:
            return shared_count(txn, info.record)


class _LinkRaced(Exception):
    """The source changed between reading it and the commit; retried."""
