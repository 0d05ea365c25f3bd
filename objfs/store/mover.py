"""The mover: one version's bytes to another tier, crash-safe, WORM-preserving.

A move is copy, verify, switch, collect:

1. **copy**: under a reader lease of the source blobs (an ordinary
   :class:`~.objects.ObjectReader`), each blob is streamed into a new blob on
   the target tier (:class:`~.blobs.BlobWriter`, declared in the intent
   journal before its first fragment exists); encrypted versions stay
   encrypted under their own data key;
2. **verify**: each new blob is read back from the target drives and its MD5
   compared with the MD5 of the bytes read from the source (and with the
   version's ETag when that is a plain MD5);
3. **switch**: the record with its new blob descriptors (a newer ``gen``) is
   written beside the new fragments first (``<id>.meta``, under
   ``_meta_change``, so ``rebuild-index`` knows the tier), then one index
   transaction replaces the record, on condition that the version is still
   the one read (same id and ``gen``), and queues the old blobs for the
   collector in that same transaction;
4. **collect**: the collector removes the old fragments under the trust
   model (minimum age, reader leases): a reader that opened the version
   before the switch finishes on the old blobs.

Retention, legal hold, tags and every other field travel with the record
unchanged; the new fragments of a locked version are marked immutable. A
process killed at any point leaves one readable version: before the switch
the old record and blobs stand (the new blobs are an unsettled intent that
scrub removes, the metadata written ahead is reconciled from the index);
after it the new ones do and the old blobs are queued garbage.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import crypto
from .audit import audited
from .blobs import BlobReader, BlobWriter
from .errors import DataLoss, InvalidArgument, NoSuchKey, NoSuchVersion, PreconditionFailed
from .links import shared_count
from .locks import lock_active
from .objects import ObjectInfo, ObjectReader
from .tiers import tier_of_record

if TYPE_CHECKING:
    from .engine import Principal, Store


class MoveRaced(PreconditionFailed):
    """The version changed (or went) while it was copied: nothing was switched."""


class MoverMixin:
    """Tier moves of :class:`objfs.store.Store`."""

    @audited("transition", target=lambda a, k, r: {"bucket": a[0], "key": a[1], "detail": k.get("tier")})
    def move_version(
        self: Store,
        bucket: str,
        key: str,
        version_id: str | None = None,
        *,
        tier: str,
        principal: Principal | None = None,
        throttle: Callable[[int], None] | None = None,
        expect: dict[str, Any] | None = None,
    ) -> ObjectInfo:
        """Move one version (the current one, or ``version_id``) to ``tier``; durable when it returns.

        Returns the version as it is now (unchanged if it is on ``tier``
        already). Raises MoveRaced when the version changed during the copy
        (nothing moved; try again), NoSuchKey/NoSuchVersion when it is gone,
        InvalidArgument for a delete marker or an SSE-C version (its key is
        the customer's; the store cannot re-encode it). ``throttle(n)`` is
        called after every ``n`` bytes copied (the lifecycle's rate limit);
        ``expect``, a record, makes the move conditional on the version still
        being that record.
        """
        target = self.config.tier(tier).name
        with self.index.read() as txn:
            self._bucket(txn, bucket)
            record = self._find(txn, bucket, key, version_id)
        if expect is not None and (record["id"] != expect["id"] or record.get("gen") != expect.get("gen")):
            raise MoveRaced(f"{bucket}/{key} changed since it was chosen")
        if record.get("delete_marker"):
            raise InvalidArgument("a delete marker has no bytes to move")
        if all(part.get("tier") == target for part in record.get("parts") or []):
            return ObjectInfo.from_record(record)
        with self.index.read() as txn:
            if shared_count(txn, record) > 1:
                return ObjectInfo.from_record(record)  # hard-linked: the other names share these blobs (links.py)
        sse = record.get("sse")
        if sse and sse.get("mode") == "C":
            raise InvalidArgument(f"{bucket}/{key} is encrypted with a customer key (SSE-C): it cannot change tiers")
        data_key = self.encryption.data_key(sse) if sse else None
        info = ObjectInfo.from_record(record)
        gen = time.time_ns()
        new = dict(record, gen=gen)
        writers: list[BlobWriter] = []
        try:
            with ObjectReader(self, info, principal, data_key=data_key) as reader:
                descs = self._copy_parts(reader, record, new, target, data_key, writers, throttle)
            new["parts"] = descs
            self._switch(record, new)
        except BaseException:
            for writer in writers:
                writer.discard()
            raise
        for writer in writers:
            writer.committed()
        if any(len(d["written"]) < d["k"] + d["m"] for d in descs):
            self.queue_heal(new, "moved with a drive missing")
        if lock_active(new, self.clock.now()):
            self._protect_files(new, True)
        return ObjectInfo.from_record(new)

    def _copy_parts(
        self: Store,
        reader: ObjectReader,
        record: dict[str, Any],
        new: dict[str, Any],
        target: str,
        data_key: bytes | None,
        writers: list[BlobWriter],
        throttle: Callable[[int], None] | None,
    ) -> list[dict[str, Any]]:
        parts = record.get("parts") or []
        # A one-blob version's fragments carry the record, as a put's do; a
        # multipart version's record lives in its meta files (written before the switch).
        single = len(parts) == 1
        owner = crypto.seal_record(self.encryption, dict(new, parts=[])) if single else {"moved": record["id"]}
        descs = []
        offset = 0
        for part in parts:
            writer = BlobWriter(self, target, data_key=data_key)
            writers.append(writer)
            digest = hashlib.md5()
            for chunk in reader.iter_range(offset, offset + part["size"]):
                digest.update(chunk)
                writer.write(chunk)
                if throttle is not None:
                    throttle(len(chunk))
            writer.end_data()
            if writer.size != part["size"]:
                raise DataLoss(f"{record['bucket']}/{record['key']}: copied {writer.size} of {part['size']} bytes")
            desc = writer.finish(owner)
            self._verify_copy(desc, data_key, digest.hexdigest(), record if single else None)
            descs.append(desc)
            offset += part["size"]
        return descs

    def _verify_copy(self: Store, desc: dict[str, Any], data_key: bytes | None, md5: str, record: dict[str, Any] | None) -> None:
        """Read the new blob back from its drives; its MD5 must be the source's (and the ETag's)."""
        check = hashlib.md5()
        blob = BlobReader(self, desc, data_key=data_key)
        try:
            for chunk in blob.iter_range(0, desc["size"]):
                check.update(chunk)
        finally:
            blob.close()
        if check.hexdigest() != md5:
            raise DataLoss(f"blob {desc['id']} read back differs from its source; the move is abandoned")
        etag = (record or {}).get("etag", "")
        if etag and "-" not in etag and not record.get("sse") and etag != md5:
            raise DataLoss(f"{record['bucket']}/{record['key']}: the bytes read do not match the ETag; not moved")

    def _switch(self: Store, record: dict[str, Any], new: dict[str, Any]) -> None:
        """Metadata on the new drives first, then one conditional transaction; the old blobs become garbage."""
        bucket, key = record["bucket"], record["key"]

        def commit(txn) -> None:
            try:
                now = self._find(txn, bucket, key, record["version"])
            except (NoSuchKey, NoSuchVersion):
                raise MoveRaced(f"{bucket}/{key} was deleted during the move") from None
            if now["id"] != record["id"] or now.get("gen") != record.get("gen"):
                raise MoveRaced(f"{bucket}/{key} changed during the move")
            self._store_record(txn, new)
            self._queue_blob_gc(txn, list(record.get("parts") or []), record["id"])

        with self._meta_change([{"id": record["id"], "bucket": bucket, "key": key, "gen": new["gen"]}]):
            self._write_meta_files(new)
            self.index.commit(commit)

    def tier_of(self: Store, record: dict[str, Any]) -> str:
        """The tier a version's bytes are on."""
        return tier_of_record(record, self.config.hot.name)
