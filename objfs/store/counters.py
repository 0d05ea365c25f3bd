"""Kept counters: objects and bytes per bucket and tier, changed in the transaction that changes them.

``objfs status``, ``objfs tier list``, ``/metrics``, ``/readyz`` and the
dashboard read these instead of scanning the index, so they stay fast at
10^7 objects. Every put and delete of a version record (the ``objects`` and
``versions`` databases) passes through :meth:`Counters.on_record`, called by
:class:`~.index.Txn` inside the very (nested) transaction of the change: a
change that rolls back rolls its count back with it, and no code path (a
put, an overwrite, a delete, a promoted version, a multipart completion, a
tier move, a rename, a heal, a rebuild) can change a record without it.

The counters live in the ``counters`` database, one entry per
``bucket \\0 tier``: ``[count, bytes]`` for each of current objects,
noncurrent versions, and delete markers (current and noncurrent). An index
written by a version of objfs without counters (no ``ready`` mark) is
counted once when the store opens; :meth:`Counters.recount` (``objfs status
--recount``) redoes that from a full scan at any time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .tiers import tier_of_record

if TYPE_CHECKING:
    from .index import Index, Txn

DB = "counters"
READY = b"\xffready"  # sorts after every bucket name (UTF-8 never has 0xFF)
CATEGORIES = ("current", "noncurrent", "current_markers", "noncurrent_markers")


def _category(db: str, record: dict[str, Any]) -> str:
    kind = "current" if db == "objects" else "noncurrent"
    return kind + "_markers" if record.get("delete_marker") else kind


class Counters:
    """The kept counters of one store's index (registered by :class:`objfs.store.Store`)."""

    def __init__(self, index: Index, hot_tier: str) -> None:
        self.index = index
        self.hot = hot_tier
        index.open_db(DB)
        with index.read() as txn:
            ready = txn.get(DB, READY) is not None
        if not ready:  # checked again under the write lock: another process may have counted meanwhile
            with index.write() as txn:
                if txn.get(DB, READY) is None:
                    self._recount(txn)
        index.record_watchers.append(self.on_record)

    def on_record(self, txn: Txn, db: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """A version record changed in ``db`` (``objects`` or ``versions``): move its count and bytes."""
        if old is not None:
            self._add(txn, db, old, -1)
        if new is not None:
            self._add(txn, db, new, 1)

    def _add(self, txn: Txn, db: str, record: dict[str, Any], sign: int) -> None:
        key = f"{record['bucket']}\0{tier_of_record(record, self.hot)}".encode()
        entry = txn.get(DB, key) or {c: [0, 0] for c in CATEGORIES}
        pair = entry.setdefault(_category(db, record), [0, 0])
        pair[0] += sign
        pair[1] += sign * int(record.get("size") or 0)
        if all(n == 0 for n, _ in entry.values()):
            txn.delete(DB, key)
        else:
            txn.put(DB, key, entry)

    def recount(self) -> dict[str, Any]:
        """Rebuild every counter from a full scan of the index (one write transaction); returns the totals."""
        with self.index.write() as txn:
            self._recount(txn)
        return self.totals()

    def _recount(self, txn: Txn) -> None:
        for key in list(txn.scan_keys(DB)):
            txn.delete(DB, key)
        counts: dict[bytes, dict[str, list[int]]] = {}
        for db in ("objects", "versions"):
            for _, record in txn.scan(db):
                key = f"{record['bucket']}\0{tier_of_record(record, self.hot)}".encode()
                entry = counts.setdefault(key, {c: [0, 0] for c in CATEGORIES})
                pair = entry[_category(db, record)]
                pair[0] += 1
                pair[1] += int(record.get("size") or 0)
        for key, entry in counts.items():
            txn.put(DB, key, entry)
        txn.put(DB, READY, True)

    def entries(self) -> Iterable[tuple[str, str, dict[str, list[int]]]]:
        """``(bucket, tier, {category: [count, bytes]})`` for every bucket and tier holding a record."""
        with self.index.read() as txn:
            rows = [(k, v) for k, v in txn.scan(DB) if k != READY]
        for key, entry in rows:
            bucket, _, tier = key.decode().partition("\0")
            yield bucket, tier, entry

    def totals(self) -> dict[str, Any]:
        """Sums for the whole store, per bucket and per tier, in the shape ``status`` reports."""
        total = _zero()
        buckets: dict[str, dict[str, int]] = {}
        tiers: dict[str, dict[str, int]] = {}
        for bucket, tier, entry in self.entries():
            for target in (total, buckets.setdefault(bucket, _zero()), tiers.setdefault(tier, _zero())):
                _accumulate(target, entry)
        return {**total, "per_bucket": buckets, "per_tier": tiers}


def _zero() -> dict[str, int]:
    return {"objects": 0, "noncurrent_versions": 0, "delete_markers": 0, "versions": 0, "bytes": 0}


def _accumulate(target: dict[str, int], entry: dict[str, list[int]]) -> None:
    """``versions``/``bytes`` count every version with data; ``noncurrent_versions`` includes noncurrent markers."""
    current, noncurrent = entry.get("current", [0, 0]), entry.get("noncurrent", [0, 0])
    current_markers, noncurrent_markers = entry.get("current_markers", [0, 0]), entry.get("noncurrent_markers", [0, 0])
    target["objects"] += current[0]
    target["noncurrent_versions"] += noncurrent[0] + noncurrent_markers[0]
    target["delete_markers"] += current_markers[0] + noncurrent_markers[0]
    target["versions"] += current[0] + noncurrent[0]
    target["bytes"] += current[1] + noncurrent[1]
