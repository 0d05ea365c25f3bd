"""Replica writes: the destination side of replication, keeping the source's version ids.

A replica is written by a principal holding the ``replication`` right (the
key the source appliance signs with, ``objfs key create --replication``).
Guarantees:

* **Same version id on both sides.** The replica's record keeps the
  source's version id, last-modified time, ETag, checksums, content type,
  metadata, tags, retention and legal hold; it gets its own blob id. It is
  marked ``replica`` (in the footer too, so ``rebuild-index`` keeps it):
  HEAD/GET say REPLICA and it is never queued for replication again.
* **Idempotent.** A version id the key already holds is not written again
  (checked before the body is stored and again in the commit), so a sender
  killed after the destination committed but before it recorded success
  duplicates nothing when it sends again.
* **Converges.** Which version is current follows the versions' times (the
  newest last-modified wins, ties broken by the larger version id), never
  the order replicas arrive in; an older replica goes straight to the
  noncurrent versions. Two appliances receiving the same set of versions
  in any order agree on the current one.
* **Locks hold.** A replica's retention and legal hold apply on the
  destination as on the source (the bucket needs object lock); a later
  update never shortens or removes COMPLIANCE retention still running, and
  the fragments of a locked replica are made immutable.
"""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING, Any, BinaryIO

from . import crypto
from .audit import audited
from .blobs import BlobWriter, new_id
from .errors import InvalidArgument, NoSuchBucket, NoSuchVersion, ObjectLocked, PreconditionFailed
from .index import SEP, Txn, object_key, version_key
from .locks import COMPLIANCE
from .objects import HEAD_BYTES, ObjectInfo, merge_indexed

if TYPE_CHECKING:
    from .engine import Principal, Store

#: What a replica descriptor may say about the version (the body travels apart).
DESCRIPTOR_FIELDS = (
    "version",
    "created",
    "etag",
    "ctype",
    "meta",
    "headers",
    "tags",
    "retention",
    "legal_hold",
    "delete_marker",
    "seq",
)


def descriptor_of(record: dict[str, Any]) -> dict[str, Any]:
    """What the destination needs to know of a version besides its bytes (JSON-safe)."""
    return {
        "version": record["version"],
        "created": record["created"],
        "etag": record.get("etag", ""),
        "ctype": record.get("ctype") or "application/octet-stream",
        "meta": dict(record.get("meta") or {}),
        "headers": dict(record.get("headers") or {}),
        "tags": dict(record.get("tags") or {}),
        "retention": record.get("retention"),
        "legal_hold": bool(record.get("legal_hold")),
        "delete_marker": bool(record.get("delete_marker")),
        "seq": record.get("seq", 0),
    }


def _newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether version ``a`` wins over ``b`` as the current one: later time, then the larger version id."""
    return (a["created"], a["version"]) > (b["created"], b["version"])


def _held(txn: Txn, bucket: str, key: str, version: str) -> dict[str, Any] | None:
    okey = object_key(bucket, key)
    current = txn.get("objects", okey)
    if current is not None and current["version"] == version:
        return current
    for _, rec in txn.scan("versions", okey + SEP):
        if rec["key"] == key and rec["version"] == version:
            return rec
    return None


class ReplicasMixin:
    """Replica writes of :class:`objfs.store.Store`."""

    @audited("replicate")
    def put_replica(
        self: Store,
        bucket: str,
        key: str,
        body: BinaryIO | bytes,
        descriptor: dict[str, Any],
        *,
        length: int | None = None,
        principal: Principal | None = None,
        verify: Any = None,
    ) -> tuple[ObjectInfo, bool]:
        """Store a replica of version ``descriptor["version"]``; returns (its info, whether it was new).

        A delete marker's descriptor says ``delete_marker`` (the body is
        empty). Durable when it returns. The destination bucket needs
        versioning (and object lock for a locked version).
        """
        desc = {name: descriptor.get(name) for name in DESCRIPTOR_FIELDS}
        version = desc["version"]
        if not isinstance(version, str) or not version or version == "null":
            raise InvalidArgument("a replica names the version id it keeps")
        if isinstance(body, (bytes, bytearray, memoryview)):
            length = len(body) if length is None else length
            body = io.BytesIO(body)
        with self.index.read() as txn:
            settings = self._bucket(txn, bucket)
            existing = _held(txn, bucket, key, version)
        if settings.get("versioning") != "Enabled":
            raise InvalidArgument(f"bucket {bucket!r}: replicas need versioning enabled, as on S3")
        if (desc["retention"] or desc["legal_hold"]) and not settings.get("object_lock"):
            raise InvalidArgument(f"bucket {bucket!r} was not created with object lock enabled: a locked replica cannot land")
        if existing is not None:
            _drain(body, length)
            return ObjectInfo.from_record(existing), False
        if desc["delete_marker"]:
            return self._put_replica_marker(settings, bucket, key, desc, principal)
        sse, data_key = crypto.for_write(self.encryption, settings, None)
        writer = BlobWriter(self, self.config.hot.name, data_key=data_key, pack=not (desc["retention"] or desc["legal_hold"]))
        try:
            etag, head = writer.ingest(body, length, verify=verify, head_bytes=HEAD_BYTES)
            record = self._new_record(
                bucket, key, writer.blob_id, writer.size, desc["etag"] or etag, desc["ctype"], desc["meta"], desc["headers"],
                None, None, desc["tags"],
            )  # fmt: skip
            self._replica_fields(record, desc, principal)
            if sse is not None:
                record["sse"] = sse
            for indexer in self.indexers:
                merge_indexed(record, indexer.extract(head, key))
            record["tags"] = dict(desc["tags"] or {})  # the source's tags, derived ones included, as they are there
            record["parts"] = [writer.finish(crypto.seal_record(self.encryption, record))]
        except BaseException:
            writer.discard()
            raise
        try:
            fresh = self._commit_replica(record, principal)
        except BaseException:
            writer.discard()
            raise
        if not fresh:
            writer.discard()  # another sender's copy of the same version won the race
            with self.index.read() as txn:
                held = _held(txn, bucket, key, version)
            return ObjectInfo.from_record(held or record), False
        writer.committed()
        desc0 = record["parts"][0]
        if len(desc0["written"]) < desc0["k"] + desc0["m"]:
            self.queue_heal(record, "written with a drive missing")
        if record.get("retention") or record.get("legal_hold"):
            self._protect_files(record, True)
        return ObjectInfo.from_record(record), True

    def _replica_fields(self: Store, record: dict[str, Any], desc: dict[str, Any], principal: Principal | None) -> None:
        record["version"] = desc["version"]
        record["created"] = float(desc["created"])
        record["seq"] = int(desc.get("seq") or time.time_ns())
        record["retention"] = desc["retention"]
        record["legal_hold"] = bool(desc["legal_hold"])
        record["replica"] = {"by": principal.name if principal is not None else "", "at": time.time()}
        record["posix"]["mtime_ns"] = int(record["created"] * 1e9)

    def _put_replica_marker(
        self: Store, settings: dict[str, Any], bucket: str, key: str, desc: dict[str, Any], principal: Principal | None
    ) -> tuple[ObjectInfo, bool]:
        marker = self._new_record(bucket, key, new_id(), 0, "", None, None, None, None, None, None)
        marker["delete_marker"] = True
        self._replica_fields(marker, desc, principal)
        with self._meta_change([{"id": marker["id"], "bucket": bucket, "key": key, "gen": 0}]):
            self._write_meta_files(marker)
            fresh = self._commit_replica(marker, principal)
        if not fresh:
            self._retire_files([marker])  # its meta file must not bring a second marker back
            with self.index.read() as txn:
                held = _held(txn, bucket, key, desc["version"])
            return ObjectInfo.from_record(held or marker), False
        return ObjectInfo.from_record(marker), True

    def _commit_replica(self: Store, record: dict[str, Any], principal: Principal | None) -> bool:
        """Place ``record`` by the convergence rule in one transaction; False when the version was there already."""
        bucket, key = record["bucket"], record["key"]

        def change(txn: Txn) -> tuple[bool, list[dict[str, Any]]]:
            settings = txn.get("buckets", bucket.encode())
            if settings is None:
                raise NoSuchBucket(f"bucket {bucket!r} does not exist")
            if _held(txn, bucket, key, record["version"]) is not None:
                return False, []
            okey = object_key(bucket, key)
            current = txn.get("objects", okey)
            garbage: list[dict[str, Any]] = []
            if current is None or _newer(record, current):
                if current is not None:
                    record["seq"] = max(record["seq"], current["seq"] + 1)
                garbage = self._retire_current(txn, settings, current, principal)
                txn.put("objects", okey, record)
                live = current if current is not None and not current.get("delete_marker") else None
                for indexer in self.indexers:
                    indexer.on_change(txn, live, None if record.get("delete_marker") else record)
            else:
                # Older than what is current here: it takes its place among the noncurrent versions.
                seq = max(1, min(record["seq"], current["seq"] - 1))
                step = -1 if seq > 1 else 1
                while txn.get("versions", version_key(bucket, key, seq)) is not None:
                    if seq + step < 1:
                        step = 1  # no room below (sequences are times in ns: never in practice)
                    seq += step
                record["seq"] = seq
                txn.put("versions", version_key(bucket, key, seq), record)
            self._records_changed(txn, None, record)
            return True, garbage

        fresh, garbage = self.index.commit(change)
        self._retire_files(garbage)
        return fresh

    @audited("replicate")
    def update_replica(
        self: Store, bucket: str, key: str, descriptor: dict[str, Any], *, principal: Principal | None = None
    ) -> ObjectInfo:
        """Apply the source's later tags, retention and legal hold to a replica held here.

        COMPLIANCE retention still running is never shortened or removed
        (ObjectLocked). Durable (on the drives first) when it returns.
        """
        version = descriptor.get("version")
        for _attempt in range(5):
            with self.index.read() as txn:
                self._bucket(txn, bucket)
                record = _held(txn, bucket, key, version) if isinstance(version, str) else None
            if record is None:
                raise NoSuchVersion(f"{bucket}/{key} has no version {version!r}")
            new = dict(record, gen=time.time_ns())
            new["tags"] = dict(descriptor.get("tags") or {})
            retention = descriptor.get("retention")
            old = record.get("retention")
            if old and old["mode"] == COMPLIANCE and old["until"] > self.clock.now():
                if not retention or retention["until"] < old["until"]:
                    raise ObjectLocked(f"{bucket}/{key}: COMPLIANCE retention can only be extended, on a replica too")
            new["retention"] = retention
            new["legal_hold"] = bool(descriptor.get("legal_hold"))

            if not self._replace_record(record, new, lambda txn, r=record: _held(txn, bucket, key, r["version"])):
                continue
            self._protect_files(new, bool(new.get("legal_hold") or new.get("retention")))
            return ObjectInfo.from_record(new)
        raise PreconditionFailed("the version changed during the update; try again")


def _drain(body: BinaryIO, length: int | None) -> None:
    """Read a body that is not needed to its end, so the request completes."""
    remaining = length
    while remaining is None or remaining > 0:
        chunk = body.read(1 << 20 if remaining is None else min(1 << 20, remaining))
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
