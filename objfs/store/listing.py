"""Listings: current objects (S3 ListObjects) and every version (ListObjectVersions).

Both are range scans of the index in key order; common prefixes are
skipped over with a cursor seek, so a directory of 100,000 entries under
one prefix costs one entry per common prefix, not one per key. Keys and
prefixes of every length a key may have (4096 bytes) list in key order,
also where the index keeps only the first 480 bytes of a long key (a block
of such keys sharing their first 480 bytes is read and sorted in memory).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .audit import guarded
from .errors import InvalidArgument
from .index import SEP, bucket_prefix, long_key_head, stored_prefix, unpack
from .names import check_prefix
from .objects import Listing, ObjectInfo

if TYPE_CHECKING:
    from .engine import Principal, Store


class ListingMixin:
    """Listing operations of :class:`objfs.store.Store`."""

    @guarded("list", target=lambda a, k, r: {"bucket": a[0]})
    def list_object_versions(self: Store, bucket: str, *, principal: Principal | None = None, **kwargs: Any) -> VersionListing:
        """See :func:`list_object_versions`."""
        return list_object_versions(self, bucket, **kwargs)

    @guarded("list", target=lambda a, k, r: {"bucket": a[0]})
    def count_subdirectories(self: Store, bucket: str, prefix: str = "", *, principal: Principal | None = None) -> int:
        """How many ``/``-delimited common prefixes lie directly under ``prefix`` (see :func:`count_common_prefixes`)."""
        return count_common_prefixes(self, bucket, prefix)

    @guarded("list", target=lambda a, k, r: {"bucket": a[0]})
    def list_objects(
        self: Store,
        bucket: str,
        prefix: str = "",
        delimiter: str = "",
        start_after: str = "",
        max_keys: int = 1000,
        *,
        principal: Principal | None = None,
    ) -> Listing:
        """Current objects in key order, S3-style: ``prefix``, ``delimiter``,
        exclusive ``start_after`` and at most ``max_keys`` entries (objects
        plus common prefixes)."""
        check_prefix(prefix)
        if max_keys < 0:
            raise InvalidArgument("max-keys must not be negative")
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        truncated = False
        last: str | None = None
        with self.index.read() as txn:
            self._bucket(txn, bucket)
            for common, _raw_key, record in _walk(txn, self, bucket, prefix, delimiter, start_after):
                if record is not None and (record["key"] == start_after or record.get("delete_marker")):
                    continue
                if len(objects) + len(prefixes) >= max_keys:
                    truncated = True
                    break
                if common is not None:
                    prefixes.append(common)
                    last = common
                else:
                    objects.append(ObjectInfo.from_record(record))
                    last = record["key"]
        return Listing(objects, prefixes, truncated, last if truncated else None)


def _walk(
    txn: Any, store: Store, bucket: str, prefix: str, delimiter: str, marker: str, *, records: bool = True
) -> Iterator[tuple[str | None, bytes, Any]]:
    """The current records under ``prefix`` in key order, rolled up by ``delimiter``.

    Yields ``(common_prefix, b"", None)`` once per common prefix and
    ``(None, index_key, record)`` per key, from ``marker`` on: common prefixes
    at or before the marker (returned on an earlier page) and keys before it
    are left out; a key equal to it is yielded, for the caller to decide.
    Each common prefix costs one cursor seek, not one step per key under it.

    Keys and prefixes of any length: the scan starts at the stored form of
    the prefix and the marker (at most their kept 480 bytes, see
    :mod:`.index`), and a block of long keys sharing their first 480 bytes
    is read whole and sorted by full key (:func:`_walk_block`).

    Without ``records`` a key kept whole is read from the index key alone
    and yielded with ``None`` for its record (no value is decoded).
    """
    skip = len(bucket_prefix(bucket))
    scan_prefix = stored_prefix(bucket_prefix(bucket) + prefix.encode())
    start = scan_prefix
    if marker:
        start = max(start, stored_prefix(bucket_prefix(bucket) + marker.encode()))
    cursor = txn.txn.cursor(db=store.index.dbs["objects"])
    positioned = cursor.set_range(start)
    while positioned and cursor.key().startswith(scan_prefix):
        head = long_key_head(cursor.key())
        if head is not None:
            positioned = yield from _walk_block(cursor, bucket, head, prefix, delimiter, marker)
            continue
        record = unpack(cursor.value()) if records else None
        key = record["key"] if record is not None else cursor.key()[skip:].decode()
        if not key.startswith(prefix):  # the 480-byte head of a longer prefix
            positioned = cursor.next()
            continue
        common = _cp(key, prefix, delimiter)
        if common is not None:
            if not (marker and common <= marker):
                yield common, b"", None
            positioned = _skip_prefix(cursor, bucket, common)
            continue
        if not (marker and key < marker):
            yield None, cursor.key(), record
        positioned = cursor.next()


def count_common_prefixes(store: Store, bucket: str, prefix: str, delimiter: str = "/") -> int:
    """How many common prefixes (the mount's subdirectories) lie directly under ``prefix``.

    A key-only walk: one cursor seek per common prefix and one index key per
    object directly under ``prefix``; no record is decoded.
    """
    check_prefix(prefix)
    with store.index.read() as txn:
        store._bucket(txn, bucket)
        return sum(1 for common, _, _ in _walk(txn, store, bucket, prefix, delimiter, "", records=False) if common is not None)


def _walk_block(
    cursor, bucket: str, head: bytes, prefix: str, delimiter: str, marker: str
) -> Iterator[tuple[str | None, bytes, Any]]:
    """:func:`_walk` over the block of keys longer than 480 bytes that share ``head``.

    The block is contiguous in the index and in key order, but inside it the
    index order is not key order (hashed keys), so it is read whole, filtered
    and sorted. When the whole block rolls up into a common prefix of at most
    480 bytes, that prefix is yielded and skipped with one seek instead.
    Returns whether the cursor is positioned after the block.
    """
    first = unpack(cursor.value())["key"]
    common = _cp(first, prefix, delimiter) if first.startswith(prefix) else None
    if common is not None and head.startswith(bucket_prefix(bucket) + common.encode()):
        # Every key of the block starts with ``head``, hence with ``common``.
        if not (marker and common <= marker):
            yield common, b"", None
        return _skip_prefix(cursor, bucket, common)
    entries = []
    positioned = True
    while positioned and long_key_head(cursor.key()) == head:
        record = unpack(cursor.value())
        key = record["key"]
        if key.startswith(prefix) and not (marker and key < marker):
            entries.append((key, cursor.key(), record))
        positioned = cursor.next()
    entries.sort(key=lambda entry: entry[0])
    last_common = None
    for key, stored, record in entries:
        common = _cp(key, prefix, delimiter)
        if common is None:
            yield None, stored, record
        elif common != last_common:
            last_common = common
            if not (marker and common <= marker):
                yield common, b"", None
    return positioned


def _cp(key: str, prefix: str, delimiter: str) -> str | None:
    """The common prefix ``key`` rolls up into, or None."""
    if not delimiter:
        return None
    pos = key.find(delimiter, len(prefix))
    if pos < 0:
        return None
    return key[: pos + len(delimiter)]


def _skip_prefix(cursor, bucket: str, common: str) -> bool:
    """Move the cursor past every key starting with ``common``; False at the end."""
    raw = bucket.encode() + SEP + common.encode()
    if len(raw) <= len(stored_prefix(raw)):
        # Every key under ``common`` is stored starting with ``raw``. Delimiters are UTF-8,
        # so the last byte is below 0xFF and can be incremented.
        return cursor.set_range(raw[:-1] + bytes([raw[-1] + 1]))
    positioned = cursor.next()
    while positioned and unpack(cursor.value())["key"].startswith(common):
        positioned = cursor.next()
    return positioned


@dataclass
class VersionListing:
    """One page of ListObjectVersions: versions and delete markers, newest first per key."""

    versions: list[ObjectInfo]
    latest: set[str]  # object ids of the entries that are their key's current version
    common_prefixes: list[str]
    truncated: bool
    next_key_marker: str | None
    next_version_id_marker: str | None


def list_object_versions(
    store: Store,
    bucket: str,
    prefix: str = "",
    delimiter: str = "",
    key_marker: str = "",
    version_id_marker: str = "",
    max_keys: int = 1000,
) -> VersionListing:
    """Every version and delete marker under ``prefix``, in key order, newest first per key."""
    check_prefix(prefix)
    entries: list[ObjectInfo] = []
    last_added: tuple[str | None, str | None] = (None, None)  # what the next page starts after
    latest: set[str] = set()
    prefixes: list[str] = []
    truncated = False
    with store.index.read() as txn:
        store._bucket(txn, bucket)
        for common, raw_key, current in _walk(txn, store, bucket, prefix, delimiter, key_marker):
            if common is not None:
                if len(entries) + len(prefixes) >= max_keys:
                    truncated = True
                    break
                prefixes.append(common)
                last_added = (common, None)
                continue
            key = current["key"]
            if key == key_marker and not version_id_marker:
                continue
            chain = [current] + [r for _, r in txn.scan("versions", raw_key + SEP) if r["key"] == key]
            if key == key_marker and version_id_marker:
                ids = [r["version"] for r in chain]
                chain = chain[ids.index(version_id_marker) + 1 :] if version_id_marker in ids else []
            for record in chain:
                if len(entries) + len(prefixes) >= max_keys:
                    truncated = True
                    break
                entries.append(ObjectInfo.from_record(record))
                last_added = (key, record["version"])
                if record["id"] == current["id"]:
                    latest.add(record["id"])
            if truncated:
                break
    return VersionListing(
        entries,
        latest,
        prefixes,
        truncated,
        last_added[0] if truncated else None,
        last_added[1] if truncated else None,
    )
