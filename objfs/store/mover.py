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
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import crypto
from .audit import audited
from .blobs import BlobReader, BlobWriter
from .errors import ConfigError, DataLoss, InvalidArgument, NoSuchKey, NoSuchVersion, PreconditionFailed, StoreError
from .links import shared_count
from .locks import lock_active
from .objects import ObjectInfo, ObjectReader
from .remotetier import delete_remote_blob, is_remote, upload_blob
from .tiers import tier_of_record

if TYPE_CHECKING:
    from .config import TierConfig
    from .engine import Principal, Store


log = logging.getLogger(__name__)

#: Index (``settings``) key prefix of the move queue: object id -> the move to do.
MOVE_QUEUE = b"tier-move\0"
#: Tries of a queued move that keeps failing for a passing reason before it leaves the queue.
MOVE_ATTEMPTS = 5


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
        target_tier = self.config.tier(tier)
        target = target_tier.name
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
        if target == self.config.hot.name:
            new["promoted"] = self.clock.now()  # the rules leave it on the first tier for [lifecycle] promoted_days
        else:
            new.pop("promoted", None)
        writers: list[BlobWriter] = []
        uploaded: list[dict[str, Any]] = []
        try:
            with ObjectReader(self, info, principal, data_key=data_key) as reader:
                if target_tier.is_remote:
                    descs = self._upload_parts(reader, record, target_tier, data_key, uploaded, throttle)
                else:
                    descs = self._copy_parts(reader, record, new, target, data_key, writers, throttle)
            new["parts"] = descs
            self._switch(record, new)
        except BaseException:
            if not self._switched(new):  # once switched, the new blobs are the version's bytes
                for writer in writers:
                    writer.discard()
                for desc in uploaded:  # the remote copy is nobody's (a locked one stays until it expires)
                    delete_remote_blob(self, desc, bypass=False)
            raise
        for writer in writers:
            writer.committed()
        if any(not is_remote(d) and len(d["written"]) < d["k"] + d["m"] for d in descs):
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
            # A locked version keeps files of its own: a volume it entered would stay immutable for good.
            writer = BlobWriter(self, target, data_key=data_key, pack=not lock_active(record, self.clock.now()))
            writers.append(writer)
            digest = hashlib.md5()
            for chunk in reader.iter_stored(offset, offset + part["size"]):
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

    def _upload_parts(
        self: Store,
        reader: ObjectReader,
        record: dict[str, Any],
        tier: TierConfig,
        data_key: bytes | None,
        uploaded: list[dict[str, Any]],
        throttle: Callable[[int], None] | None,
    ) -> list[dict[str, Any]]:
        """Each blob to one object on the remote tier, verified there (see :mod:`.remotetier`)."""
        descs = []
        offset = 0
        single = len(record.get("parts") or []) == 1
        for part in record.get("parts") or []:
            digest = hashlib.md5()
            chunks = _hashed(reader.iter_stored(offset, offset + part["size"]), digest)
            desc = upload_blob(self, tier, chunks, part["size"], record, data_key=data_key, throttle=throttle)
            uploaded.append(desc)
            etag = record.get("etag", "")
            # A sparse version's ETag covers its holes too, not only the stored bytes.
            dense = not record.get("extents")
            if single and dense and etag and "-" not in etag and not record.get("sse") and etag != digest.hexdigest():
                raise DataLoss(f"{record['bucket']}/{record['key']}: the bytes read do not match the ETag; not moved")
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
        if etag and "-" not in etag and not record.get("sse") and not record.get("extents") and etag != md5:
            raise DataLoss(f"{record['bucket']}/{record['key']}: the bytes read do not match the ETag; not moved")

    def _switch(self: Store, record: dict[str, Any], new: dict[str, Any], *, meta_files: bool = True) -> None:
        """Metadata on the new drives first, then one conditional transaction; the old blobs become garbage.

        ``meta_files=False`` when the new blob's footers carry the whole
        record already (a one-blob version rewritten in place: `objfs upgrade`).
        """
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

        if not meta_files:
            self.index.commit(commit)
            return
        with self._meta_change([{"id": record["id"], "bucket": bucket, "key": key, "gen": new["gen"]}]):
            self._write_meta_files(new)
            self.index.commit(commit)

    # -- promotion: versions back to the first tier, in the background ----------------

    def promotes_on_read(self: Store, record: dict[str, Any]) -> bool:
        """Whether a read of this version should bring it back to the first tier."""
        here = tier_of_record(record, self.config.hot.name)
        if here == self.config.hot.name or record.get("delete_marker"):
            return False
        try:
            tier = self.config.tier(here)
        except StoreError:
            return False
        return tier.promote_on_read or self.config.lifecycle.promote_on_read

    def note_read(self: Store, record: dict[str, Any]) -> None:
        """A front opened this version: queue its promotion when its tier promotes on read (the read never waits on it)."""
        if not self.promotes_on_read(record):
            return
        try:
            self.queue_move(record, self.config.hot.name, "read")
        except StoreError as exc:  # the read goes on; the next read queues it again
            log.warning("promotion of %s/%s not queued: %s", record["bucket"], record["key"], exc)

    def queue_move(self: Store, record: dict[str, Any], tier: str, reason: str) -> bool:
        """Queue a move of this version to ``tier`` for the mover of ``objfs serve``; False when queued already."""
        key = MOVE_QUEUE + record["id"].encode()
        with self.index.read() as txn:
            queued = txn.get("settings", key)
        if queued is not None and queued.get("tier") == tier:
            return False
        entry = {
            "bucket": record["bucket"],
            "key": record["key"],
            "version": record["version"],
            "id": record["id"],
            "tier": tier,
            "reason": reason,
            "t": self.clock.now(),
        }
        with self.index.write() as txn:
            txn.put("settings", key, entry)
        return True

    def add_move_planner(self: Store, planner: Callable[[Store], Any]) -> None:
        """Have ``planner(store)`` queue moves (``queue_move``) before each pass of the queued moves.

        For policies the engine cannot judge itself, registered by whoever
        opens the store (e.g. a patient's priors, :mod:`objfs.dicom.priors`):
        the planner runs in the mover's pass, never on the write path.
        """
        planners = self.__dict__.setdefault("_move_planners", [])
        if planner not in planners:
            planners.append(planner)

    def plan_moves(self: Store) -> None:
        """Run the move planners; one that fails is logged and the pass goes on."""
        for planner in self.__dict__.get("_move_planners", ()):
            try:
                planner(self)
            except StoreError as exc:
                log.warning("move planner %s failed: %s", getattr(planner, "__name__", planner), exc)

    def queued_moves(self: Store) -> list[dict[str, Any]]:
        with self.index.read() as txn:
            return [entry for _, entry in txn.scan("settings", MOVE_QUEUE)]

    def run_queued_moves(
        self: Store, *, max_actions: int | None = None, throttle: Callable[[int], None] | None = None
    ) -> dict[str, list[str]]:
        """Do the queued moves (promotions first come, first served); an entry leaves the queue once done or moot.

        A move that fails for a passing reason (a remote that does not answer,
        a race) stays queued for the next pass, up to MOVE_ATTEMPTS tries.
        """
        report: dict[str, list[str]] = {"moved": [], "failed": [], "dropped": []}
        self.plan_moves()
        principal = self.system_principal("lifecycle")
        entries = sorted(self.queued_moves(), key=lambda e: e.get("t", 0))
        for entry in entries[:max_actions]:
            name = f"{entry['bucket']}/{entry['key']}@{entry['version']} -> {entry['tier']}"
            done = True
            try:
                record = self._record_by_id(entry["bucket"], entry["key"], entry["id"])
                if record is None:
                    report["dropped"].append(name)
                else:
                    self.move_version(
                        entry["bucket"],
                        entry["key"],
                        entry["version"],
                        tier=entry["tier"],
                        principal=principal,
                        throttle=throttle,
                    )
                    report["moved"].append(name)
            except (NoSuchKey, NoSuchVersion, InvalidArgument, ConfigError) as exc:
                report["dropped"].append(f"{name}: {exc}")
            except StoreError as exc:
                attempts = entry.get("attempts", 0) + 1
                done = attempts >= MOVE_ATTEMPTS
                report["failed"].append(f"{name}: {exc}")
                log.warning("queued move %s failed (try %d of %d): %s", name, attempts, MOVE_ATTEMPTS, exc)
                if not done:
                    self._requeue(entry, attempts)
            if done:
                self._unqueue(entry)
        return report

    def _unqueue(self: Store, entry: dict[str, Any]) -> None:
        key = MOVE_QUEUE + entry["id"].encode()

        def change(txn) -> None:
            current = txn.get("settings", key)
            if current is not None and current.get("t") == entry.get("t") and current.get("tier") == entry["tier"]:
                txn.delete("settings", key)

        self.index.commit(change)

    def _requeue(self: Store, entry: dict[str, Any], attempts: int) -> None:
        with self.index.write() as txn:
            txn.put("settings", MOVE_QUEUE + entry["id"].encode(), dict(entry, attempts=attempts))

    @audited("transition", target=lambda a, k, r: {"bucket": a[0], "key": a[1] if len(a) > 1 else "", "detail": "promote"})
    def promote_prefix(
        self: Store, bucket: str, prefix: str = "", *, now: bool = True, principal: Principal | None = None
    ) -> list[str]:
        """Bring every current version under ``prefix`` that is on a colder tier back to the first tier.

        With ``now`` the moves are done here (returns what moved); otherwise
        they are queued for the mover of ``objfs serve`` (returns what was
        queued). For a patient's priors ahead of a visit.
        """
        hot = self.config.hot.name
        with self.index.read() as txn:
            self._bucket(txn, bucket)
            cold = [
                rec
                for _, rec in txn.scan_objects(bucket, prefix)
                if not rec.get("delete_marker") and tier_of_record(rec, hot) != hot
            ]
        names = []
        for rec in cold:
            name = f"{rec['bucket']}/{rec['key']}"
            if now:
                try:
                    self.move_version(rec["bucket"], rec["key"], rec["version"], tier=hot, principal=principal, expect=rec)
                except (NoSuchKey, NoSuchVersion, MoveRaced):
                    continue
            elif not self.queue_move(rec, hot, "promote"):
                continue
            names.append(name)
        return names

    @audited("restore")
    def restore_version(
        self: Store, bucket: str, key: str, version_id: str | None = None, *, principal: Principal | None = None
    ) -> str:
        """S3 RestoreObject: bring a version on a colder tier back to the first tier (promotion, by the mover).

        Returns ``"hot"`` when the version is on the first tier already,
        ``"queued"`` once its move is queued (durably) for the moves loop of
        ``objfs serve``, or ``"ongoing"`` when its move there was queued
        already (by an earlier restore, a read, or a new study's priors). It stays on the first tier for ``[lifecycle]
        promoted_days`` (the restore's Days are not the client's to choose here).
        """
        with self.index.read() as txn:
            self._bucket(txn, bucket)
            record = self._find(txn, bucket, key, version_id)
        if record.get("delete_marker"):
            raise InvalidArgument("a delete marker has no bytes to restore")
        hot = self.config.hot.name
        if tier_of_record(record, hot) == hot:
            return "hot"
        return "queued" if self.queue_move(record, hot, "restore") else "ongoing"

    def restore_state(self: Store, record: dict[str, Any]) -> tuple[bool, float | None] | None:
        """What S3's ``x-amz-restore`` says of a version: (ongoing, until) or None when no restore applies.

        Ongoing: its move to the first tier is queued. Done: it was promoted,
        and the rules leave it there until ``until``.
        """
        hot = self.config.hot.name
        if tier_of_record(record, hot) != hot:
            with self.index.read() as txn:
                queued = txn.get("settings", MOVE_QUEUE + record["id"].encode())
            return (True, None) if queued is not None and queued.get("tier") == hot else None
        if record.get("promoted"):
            day = self.config.lifecycle.day_seconds
            return False, record["promoted"] + self.config.lifecycle.promoted_days * day
        return None

    def _switched(self: Store, new: dict[str, Any]) -> bool:
        try:
            now = self._record_by_id(new["bucket"], new["key"], new["id"])
        except Exception:  # noqa: BLE001 - the index cannot say: keep the new blobs (scrub settles them)
            return True
        return now is not None and now.get("gen") == new["gen"]

    def tier_of(self: Store, record: dict[str, Any]) -> str:
        """The tier a version's bytes are on."""
        return tier_of_record(record, self.config.hot.name)


def _hashed(chunks: Iterator[bytes], digest: Any) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk
