"""The LMDB index: schema, key encoding and transactions.

Named databases (values are msgpack):

``buckets``   name -> bucket settings
``objects``   bucket \\0 key -> current record of the key
``versions``  bucket \\0 key \\0 version -> noncurrent versions (versioned buckets)
``uploads``   upload id -> multipart upload; ``parts``: upload id \\0 part -> part
``heal``      object id -> why it needs healing; ``gc``: blob id -> fragments to delete
``completed`` ``u`` upload id -> what a recent completion made (a retried Complete answers
              the same); ``t`` time upload id -> nothing, to forget them in order

The map grows with the store: it starts at ``OBJFS_INDEX_MAP_SIZE`` bytes
(default 64 GiB, a sparse reservation of address space) and doubles when a
write transaction finds it nearly full or full (the change is retried).
Growing needs no transaction active in this process, so every transaction
passes a gate that a growth closes for its (short) duration; another
process that grew the map is followed when LMDB reports ``MAP_RESIZED``.

Secondary indexes (e.g. DICOM's) bring their own named databases, opened by
:meth:`Index.open_db` when their indexer is registered with the store
(:meth:`objfs.store.Store.register_indexer`); the engine knows none of them.

LMDB limits keys to 511 bytes; ``bucket \\0 key`` can reach 1088. A longer
index key keeps its first 480 bytes, then a 0xFF byte (never in UTF-8) and a
hash of the rest, so it stays unique and its position stays stable for
pagination; such keys sort after the shorter keys that share those 480
bytes. The value always holds the full key.

So a scan for keys starting with a raw prefix scans :func:`stored_prefix`
(at most the kept 480 bytes) and, where the prefix is longer than that,
filters by the full key in the value (:meth:`Txn.scan_objects`). Every key
over 480 bytes sits in the block of keys that share its first 480 bytes
(its *head*): that block is contiguous in both the index's byte order and
true key order, only its inner order differs (see :func:`long_key_head`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import msgpack

T = TypeVar("T")
log = logging.getLogger(__name__)
DATABASES = ("buckets", "objects", "versions", "uploads", "parts", "heal", "gc", "settings", "completed")
RECORD_DBS = frozenset({"objects", "versions"})  # version records: their changes are watched (kept counters)
MAX_DBS = 64  # the engine's databases plus room for those of indexers registered later (LMDB fixes it at open)
DEFAULT_MAP_SIZE = 64 << 30
MAP_SIZE_ENV = "OBJFS_INDEX_MAP_SIZE"
_GROW_AT = 0.8  # grow before a write when the used pages pass this share of the map
_GROW_WAIT = 10.0  # seconds a growth waits for the process's other transactions to end
_KEY_LIMIT = 500
_KEEP = 480
SEP = b"\0"


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


def fit_key(raw: bytes) -> bytes:
    """An LMDB key for ``raw`` that fits LMDB's key size limit."""
    if len(raw) <= _KEY_LIMIT:
        return raw
    return raw[:_KEEP] + b"\xff" + hashlib.blake2b(raw, digest_size=16).digest()


def long_key_head(stored: bytes) -> bytes | None:
    """The 480-byte head shared by ``stored``'s block of long keys, or None for a key kept whole in order.

    Keys of more than 480 bytes (kept raw up to 500, hashed beyond) are not
    in key order among the keys sharing their first 480 bytes; readers that
    need key order sort that block by the full keys in the values.
    """
    return stored[:_KEEP] if len(stored) > _KEEP else None


def stored_prefix(raw_prefix: bytes) -> bytes:
    """The bytes every index key of a raw key starting with ``raw_prefix`` starts with."""
    return raw_prefix[:_KEEP]


def object_key(bucket: str, key: str) -> bytes:
    return fit_key(bucket.encode() + SEP + key.encode())


def bucket_prefix(bucket: str) -> bytes:
    return bucket.encode() + SEP


def version_key(bucket: str, key: str, seq: int) -> bytes:
    """Versions of a key sort newest first: the sequence number is inverted."""
    base = fit_key(bucket.encode() + SEP + key.encode())
    return base + SEP + (2**64 - 1 - seq).to_bytes(8, "big")


class Index:
    """The LMDB environment of a store. Thread-safe; one per process."""

    def __init__(self, path: Path, *, map_size: int | None = None) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        if map_size is None:
            map_size = int(os.environ.get(MAP_SIZE_ENV) or DEFAULT_MAP_SIZE)
        # max_spare_txns keeps read transactions cheap in threaded fronts.
        self.env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=MAX_DBS,
            max_readers=1024,
            metasync=True,
            sync=True,
            lock=True,
        )
        self.dbs: dict[str, Any] = {}
        self._gate = threading.Condition()
        self._active = 0  # transactions open in this process
        self._growing = False
        self._mine = threading.local()  # transactions open in this thread
        with self.env.begin(write=True) as txn:
            for name in DATABASES:
                self.dbs[name] = self.env.open_db(name.encode(), txn=txn)
        with self.env.begin(write=True) as txn:
            raw = txn.get(b"index-id", db=self.dbs["settings"])
            if raw is None:
                # Identifies this index among the ones the drives have seen (lost, rebuilt, restored).
                raw = pack(uuid.uuid4().hex)
                txn.put(b"index-id", raw, db=self.dbs["settings"])
        self.index_id: str = unpack(raw)
        self._pid = os.getpid()
        self._group = threading.Condition()
        self._queue: list[_Pending] = []
        self._committing = False
        #: Called as ``watcher(txn, db, old, new)`` for every put or delete of a
        #: version record (:data:`RECORD_DBS`), inside that change's transaction
        #: (the kept counters, :mod:`.counters`).
        self.record_watchers: list[Callable[[Txn, str, Any, Any], None]] = []

    def close(self) -> None:
        self.env.close()

    def state(self) -> dict[str, Any]:
        """``{"index_id", "txnid"}``: which index this is and how far its history goes."""
        return {"index_id": self.index_id, "txnid": self.env.info()["last_txnid"]}

    def open_db(self, name: str) -> None:
        """Open (creating if needed) the named database ``name`` for a secondary index. Idempotent.

        Creating a database needs a write transaction; call this before the
        process starts using the index from several threads.
        """
        if name in self.dbs:
            return
        if len(self.dbs) >= MAX_DBS:
            raise ValueError(f"no room for database {name!r}: at most {MAX_DBS} named databases")
        txn = self._begin(write=True)
        try:
            with txn:
                self.dbs[name] = self.env.open_db(name.encode(), txn=txn)
        finally:
            self._leave()

    # -- the map-size gate ------------------------------------------------------

    def _enter(self) -> None:
        with self._gate:
            while self._growing and not getattr(self._mine, "n", 0):
                self._gate.wait()
            self._active += 1
        self._mine.n = getattr(self._mine, "n", 0) + 1

    def _leave(self) -> None:
        self._mine.n -= 1
        with self._gate:
            self._active -= 1
            if self._growing and self._active == 0:
                self._gate.notify_all()

    def _begin(self, **kwargs: Any) -> lmdb.Transaction:
        """``env.begin`` inside the gate; follows a map another process grew."""
        for _attempt in range(8):
            self._enter()
            try:
                return self.env.begin(**kwargs)
            except lmdb.MapResizedError:
                self._leave()
                self._resize(0)  # adopt the size the other process set
            except BaseException:
                self._leave()
                raise
        raise lmdb.MapResizedError("another process grew the index map and it could not be followed")

    def _resize(self, size: int) -> bool:
        """Set the map size (0: the size in the file) once no other transaction of this process is open.

        Returns False when that did not happen within ``_GROW_WAIT`` (this
        thread holds a transaction, or another never ends); the caller then
        goes on with the map as it is.
        """
        if getattr(self._mine, "n", 0):
            return False  # our own open transaction would be invalidated
        with self._gate:
            if self._growing:
                # Another thread is growing it: wait for that instead.
                self._gate.wait_for(lambda: not self._growing, timeout=_GROW_WAIT)
                return not self._growing
            self._growing = True
            try:
                if not self._gate.wait_for(lambda: self._active == 0, timeout=_GROW_WAIT):
                    return False
                self.env.set_mapsize(size)
                return True
            finally:
                self._growing = False
                self._gate.notify_all()

    def _measure(self) -> tuple[int, int]:
        """(map size, bytes used), read inside the gate: LMDB refuses ``env.info`` while another thread resizes."""
        self._enter()
        try:
            info = self.env.info()
            return info["map_size"], (info["last_pgno"] + 1) * self.env.stat()["psize"]
        finally:
            self._leave()

    def map_size(self) -> int:
        return self._measure()[0]

    def _grow(self, *, full: bool = False) -> bool:
        """Double the map when it is full (``full``) or nearly so; True when it grew."""
        size, used = self._measure()
        if not full and used < size * _GROW_AT:
            return False
        grown = self._resize(size * 2)
        if grown:
            log.info("index map grown from %d to %d bytes", size, size * 2)
        return grown

    @contextmanager
    def read(self) -> Iterator[Txn]:
        txn = self._begin(buffers=False)
        try:
            with txn:
                yield Txn(self, txn)
        finally:
            self._leave()

    def commit(self, change: Callable[[Txn], T]) -> T:
        """Run ``change`` in a write transaction and commit it durably (group commit).

        Concurrent callers share one LMDB commit (one fsync) instead of paying
        one each; every change runs in its own nested transaction, so one that
        raises is rolled back alone and its exception re-raised to its caller.
        """
        self._grow()
        mine = _Pending(change)
        with self._group:
            self._queue.append(mine)
            while not mine.done and self._committing:
                self._group.wait()
            if mine.done:
                return mine.outcome()
            self._committing = True
            batch, self._queue = self._queue, []
        try:
            for attempt in range(8):
                if self._commit_batch(batch):
                    break
                if not self._grow(full=True) and attempt == 7:
                    raise lmdb.MapFullError("the index map is full and could not grow")
        except BaseException as exc:
            for pending in batch:
                if pending.error is None:
                    pending.error = exc
        finally:
            with self._group:
                for pending in batch:
                    pending.done = True
                self._committing = False
                self._group.notify_all()
        return mine.outcome()

    def _commit_batch(self, batch: list[_Pending]) -> bool:
        """Run and commit a group of changes; False (nothing committed) when the map is full."""
        outer = self._begin(write=True)
        try:
            for pending in batch:
                pending.error = None
                try:
                    with self.env.begin(write=True, parent=outer) as child:
                        pending.result = pending.change(Txn(self, child))
                except lmdb.MapFullError:
                    outer.abort()
                    return False
                except BaseException as exc:  # handed to its caller
                    pending.error = exc
            try:
                outer.commit()
            except lmdb.MapFullError:
                return False
            return True
        except BaseException:
            outer.abort()
            raise
        finally:
            self._leave()

    @contextmanager
    def write(self) -> Iterator[Txn]:
        """A write transaction: committed (durably) when the block ends without error.

        Keep it short and do no drive I/O inside: write transactions
        serialize across every process of the store. A block that fills the
        map raises ``lmdb.MapFullError`` after the map has grown: running it
        again succeeds (blocks are checked for room before they start, so
        only one larger than a fifth of the map gets there).
        """
        self._grow()
        txn = self._begin(write=True)
        try:
            with txn:
                yield Txn(self, txn)
        except lmdb.MapFullError:
            self._leave()
            txn = None
            self._grow(full=True)
            raise
        finally:
            if txn is not None:
                self._leave()


class _Pending:
    def __init__(self, change: Callable[[Txn], Any]) -> None:
        self.change = change
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class Txn:
    """A transaction with msgpack values and named databases."""

    def __init__(self, index: Index, txn: lmdb.Transaction) -> None:
        self._index = index
        self.txn = txn

    def get(self, db: str, key: bytes) -> Any:
        raw = self.txn.get(key, db=self._index.dbs[db])
        return None if raw is None else unpack(raw)

    def put(self, db: str, key: bytes, value: Any) -> None:
        watchers = self._index.record_watchers if db in RECORD_DBS else ()
        if not watchers:
            self.txn.put(key, pack(value), db=self._index.dbs[db])
            return
        raw = self.txn.replace(key, pack(value), db=self._index.dbs[db])
        old = None if raw is None else unpack(raw)
        for watch in watchers:
            watch(self, db, old, value)

    def delete(self, db: str, key: bytes) -> bool:
        watchers = self._index.record_watchers if db in RECORD_DBS else ()
        if not watchers:
            return self.txn.delete(key, db=self._index.dbs[db])
        raw = self.txn.pop(key, db=self._index.dbs[db])
        if raw is None:
            return False
        old = unpack(raw)
        for watch in watchers:
            watch(self, db, old, None)
        return True

    def scan(self, db: str, prefix: bytes = b"", start: bytes | None = None) -> Iterator[tuple[bytes, Any]]:
        """Items whose key starts with ``prefix``, from ``start`` (inclusive) on."""
        cursor = self.txn.cursor(db=self._index.dbs[db])
        first = max(prefix, start) if start is not None else prefix
        if not cursor.set_range(first):
            return
        for raw_key, raw_value in cursor:
            if not raw_key.startswith(prefix):
                return
            yield raw_key, unpack(raw_value)

    def scan_keys(self, db: str, prefix: bytes = b"", start: bytes | None = None) -> Iterator[bytes]:
        cursor = self.txn.cursor(db=self._index.dbs[db])
        first = max(prefix, start) if start is not None else prefix
        if not cursor.set_range(first):
            return
        for raw_key in cursor.iternext(keys=True, values=False):
            if not raw_key.startswith(prefix):
                return
            yield raw_key

    def scan_objects(self, bucket: str, prefix: str = "") -> Iterator[tuple[bytes, Any]]:
        """Current records of ``bucket`` whose key starts with ``prefix`` (any length), in index order."""
        for raw_key, record in self.scan("objects", stored_prefix(bucket_prefix(bucket) + prefix.encode())):
            if record["key"].startswith(prefix):
                yield raw_key, record

    def count(self, db: str) -> int:
        return self.txn.stat(self._index.dbs[db])["entries"]

    def any(self, db: str, prefix: bytes) -> bool:
        for _ in self.scan_keys(db, prefix):
            return True
        return False
