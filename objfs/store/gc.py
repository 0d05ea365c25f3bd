"""Garbage collection: data leaves the drives only on positive, durable evidence.

A version becomes garbage when a committed index transaction retires it
(deleted, or replaced where the bucket keeps no versions). That same
transaction writes a ``gc`` entry per blob of the version: the positive
evidence, durable with the change that caused it. Before the change is
acknowledged, a *tombstone* (the version's record marked ``deleted``, with
a newer ``gen``) is written on m+1 of its drives, so ``rebuild-index``
never brings it back. In a store that packs small blobs (format 3) a
tombstone is a record entry appended to each drive's active volume
(:mod:`.volumes`): concurrent retirements share the volume's group
``fdatasync`` with the data being written, where a ``<id>.meta`` file cost
a file, an fsync, a rename and a directory fsync per drive. Older stores
keep writing ``.meta`` files. Either way, ``rebuild-index`` takes the
newest ``gen`` of an id, so a tombstone outranks the record it retires.

:meth:`GarbageMixin.collect_garbage` deletes a blob's fragment files only
when its entry is at least ``[gc] min_age_seconds`` old, no reader in any
live process holds a lease on it (see :mod:`.leases`), and the version is
not under retention or legal hold (unless the deletion was an authorised
GOVERNANCE bypass, recorded in the entry). An entry is removed only once
every fragment file is confirmed gone; a drive that cannot be reached keeps
it for the next pass. A fragment packed in a volume (:mod:`.volumes`) is
punched instead of unlinked; in an immutable volume (it holds locked data)
its bytes stay, counted in ``volume_bytes_kept``, and the entry is settled.
A volume this pass emptied is unlinked once no process may append to it. Nothing is ever deleted because an index entry, a
reader or a marker is *missing*.

:meth:`GarbageMixin.sweep_remote_orphans` is the one exception, for remote
tiers only: an object under this store's prefix on a remote bucket that no
record and no gc entry references (a mover killed after its upload, before
the switch) is deleted once older than ``min_age_seconds`` and unlocked,
and only while the index is trusted (``index_trust``): the remote is listed
before the index is read, so only an upload never switched can be missing
from it.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .blobs import fragment_location
from .crypto import seal_record
from .fragments import meta_image, read_meta, write_meta
from .leases import LeasesUnreadable
from .links import release_shared
from .locks import lock_active
from .reports import Report
from .volumes import ENTRY_BYTES, RECORD_MAGIC, punch_entry, unlink_if_dead

if TYPE_CHECKING:
    from .drives import Drive
    from .engine import Store
    from .index import Txn

log = logging.getLogger(__name__)

#: Fields of a retired record that its gc entry and tombstone keep.
SUMMARY = ("id", "bucket", "key", "version", "seq", "created", "retention", "legal_hold", "delete_marker")
GC_BATCH = 500


@dataclass
class GcReport(Report):
    collected: int = 0
    waiting: int = 0
    leased: int = 0
    locked: int = 0
    unreachable: int = 0
    refused: list[str] = field(default_factory=list)
    #: Volume entries punched (their space returned to the filesystem).
    volume_entries_punched: int = 0
    #: Bytes of dead volume entries left in place: their volume is immutable (it holds locked data).
    volume_bytes_kept: int = 0
    #: Volumes removed because every entry in them was dead.
    volumes_removed: int = 0


def summary(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in SUMMARY}


def tombstone_of(record: dict[str, Any]) -> dict[str, Any]:
    """The record that says "this version was retired" (newest ``gen`` wins in rebuild-index)."""
    return dict(summary(record), deleted=True, gen=time.time_ns(), parts=list(record.get("parts") or []))


class GarbageMixin:
    """Garbage operations of :class:`objfs.store.Store`."""

    def _queue_gc(self: Store, txn: Txn, records: list[dict[str, Any]], *, override: bool = False) -> None:
        """Inside the retiring transaction: one durable gc entry per blob of each record.

        ``override`` records that a locked version was deleted under an
        authorised GOVERNANCE bypass, the only way a locked version becomes garbage.
        """
        now = time.time()
        for rec in records:
            if release_shared(txn, rec):
                continue  # another name (a hard link) still holds these blobs
            for desc in rec.get("parts", []):
                entry = {"blob": desc, "object": rec["id"], "t": now, "rec": summary(rec), "override": override}
                txn.put("gc", desc["id"].encode(), entry)

    def _queue_blob_gc(self: Store, txn: Txn, blobs: list[dict[str, Any]], owner: str) -> None:
        """Inside a transaction: blobs that belong to no version (replaced or unused multipart parts)."""
        now = time.time()
        for desc in blobs:
            txn.put("gc", desc["id"].encode(), {"blob": desc, "object": owner, "t": now, "rec": None, "override": False})

    def _retire_files(self: Store, records: list[dict[str, Any]]) -> None:
        """After the retiring commit, before it is acknowledged: tombstones on the records' drives.

        A failure here is not fatal (the commit stands): the collector writes
        the tombstone again before it deletes anything.
        """
        try:
            self._write_tombstones(records)
        except OSError as exc:
            log.warning("tombstones of %d retired versions not all written yet (%s); the collector will retry", len(records), exc)

    def _write_tombstone(self: Store, rec: dict[str, Any]) -> None:
        self._write_tombstones([rec])

    def _write_tombstones(self: Store, records: list[dict[str, Any]]) -> None:
        """Durably record each of ``records`` as retired on m+1 of its drives; OSError if one reached no drive.

        Packed (a record entry per drive, appended to its active volume; one
        sync per volume covers every tombstone and whatever else was
        appended meanwhile) when the store packs small blobs, else a
        ``.meta`` file per drive. The drives are written in parallel: an
        overwrite waits for one sync round, not one per drive.
        """
        if not records:
            return
        packed = self.config.pack_max > 0
        per_drive: dict[Drive, list[tuple[str, bytes | dict[str, Any]]]] = {}
        placed: set[str] = set()
        for rec in records:
            stone = seal_record(self.encryption, tombstone_of(rec), like=rec)
            for drive in self._meta_drives(rec)[: self.config.hot.m + 1]:
                per_drive.setdefault(drive, []).append((rec["id"], meta_image(stone) if packed else stone))
                placed.add(rec["id"])

        def write(item: tuple[Drive, list[tuple[str, Any]]]) -> set[str]:
            drive, stones = item
            try:
                if not packed:
                    for object_id, stone in stones:
                        write_meta(drive.meta_path(object_id), drive.tmp_dir, stone)
                    return {object_id for object_id, _ in stones}
                ends: dict[Any, int] = {}
                held = []  # one hold per append, released once its sync is done
                try:
                    for object_id, image in stones:
                        volume, offset = self.volumes.append(drive.path, object_id, 0, image, RECORD_MAGIC)
                        held.append(volume)
                        ends[volume] = max(ends.get(volume, 0), offset + len(image))
                    for volume, end in ends.items():
                        volume.sync_through(end)
                        if os.fstat(volume.fd).st_nlink == 0:  # the drive was wiped under the open volume
                            self.volumes.retire(volume)
                            raise OSError(errno.ENOENT, "the volume was removed from its drive", str(volume.path))
                finally:
                    for volume in held:
                        volume.release()
                return {object_id for object_id, _ in stones}
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    self.mark_drive_suspect(drive)
                return set()

        written: set[str] = set()
        if len(per_drive) == 1:
            written = write(next(iter(per_drive.items())))
        else:
            for ids in self.meta_pool.map(write, per_drive.items()):
                written |= ids
        missing = sorted(placed - written)
        if missing:
            raise OSError(errno.EIO, f"no drive accepted the tombstone of {missing[0]}")

    def _tombstone_for(self: Store, rec: dict[str, Any], desc: dict[str, Any]) -> dict[str, Any] | None:
        """The record to tombstone before ``desc`` goes, or None when a ``.meta`` tombstone is already there.

        A packed tombstone cannot be found without scanning volumes, so for
        one the collector appends another (cheap: batched, one sync per
        volume); the retirement's own may not have become durable.
        """
        metas = [m for m in (read_meta(d.meta_path(rec["id"])) for d in self._meta_drives(dict(rec, parts=[desc]))) if m]
        if any(m.get("deleted") for m in metas):
            return None
        # The record's own meta (renames, multipart) lists every blob; a plain put has just this one.
        known = next((m for m in metas if m.get("parts")), None)
        return dict(rec, parts=known["parts"] if known else [desc])

    def _ensure_tombstone(self: Store, rec: dict[str, Any], desc: dict[str, Any]) -> None:
        """Before a blob goes: its version's tombstone is on the drives (written at retirement, unless that failed)."""
        stone = self._tombstone_for(rec, desc)
        if stone is not None:
            self._write_tombstone(stone)

    def _tombstone_batch(
        self: Store, batch: list[tuple[bytes, dict[str, Any]]], now: float, min_age: float, held: set[str]
    ) -> set[str]:
        """Tombstones of every version this batch may collect, written together; the blob ids now covered."""
        stones: dict[str, dict[str, Any]] = {}
        for _raw_key, entry in batch:
            rec, desc = entry.get("rec"), entry["blob"]
            if rec is None or self._blocked(entry, now, min_age, held) is not None:
                continue
            try:
                stone = self._tombstone_for(rec, desc)
            except OSError:
                continue
            if stone is not None:
                stones[desc["id"]] = stone
        if not stones:
            return set()
        try:
            self._write_tombstones(list(stones.values()))
        except OSError:
            return set()  # each entry tries again on its own
        return set(stones)

    def _blocked(self: Store, entry: dict[str, Any], now: float, min_age: float, held: set[str]) -> str | None:
        """Why an entry cannot be collected now ("waiting", "leased", "locked"), or None."""
        if now - entry.get("t", 0.0) < min_age:
            return "waiting"
        if entry["blob"]["id"] in held:
            return "leased"
        rec = entry.get("rec")
        if rec is not None and lock_active(rec, self.clock.now()) and not entry.get("override"):
            return "locked"
        return None

    def gc_pending(self: Store) -> int:
        with self.index.read() as txn:
            return txn.count("gc")

    def collect_garbage(self: Store, *, min_age: float | None = None) -> GcReport:
        """Delete the fragments of retired blobs that are old enough, unread and unlocked.

        Safe to run from any process at any time, concurrently with
        everything else; bounded memory (the queue is read in batches).
        """
        report = GcReport()
        min_age = self.config.gc_min_age if min_age is None else min_age
        touched: set[Path] = set()  # volumes this pass punched entries in
        try:
            self._collect_batches(report, min_age, touched)
        finally:
            self._remove_dead_volumes(touched, min_age, report)
        return report

    def _collect_batches(self: Store, report: GcReport, min_age: float, touched: set[Path]) -> None:
        start = b""
        while True:
            with self.index.read() as txn:
                batch = []
                for raw_key, entry in txn.scan("gc", start=start):
                    if raw_key == start:
                        continue
                    batch.append((raw_key, entry))
                    if len(batch) >= GC_BATCH:
                        break
            if not batch:
                return
            start = batch[-1][0]
            now = time.time()
            try:
                held = self.leases.held(now, self.config.gc_reader_grace)
            except LeasesUnreadable:
                report.waiting += len(batch)  # a reader's lease file was mid-rewrite: next pass
                return
            done = []
            stoned = self._tombstone_batch(batch, now, min_age, held)
            for raw_key, entry in batch:
                verdict = self._collect_one(entry, now, min_age, held, report, touched, stoned)
                if verdict:
                    done.append((raw_key, entry))
            if done:

                def forget(txn: Txn, done=done) -> None:
                    for raw_key, entry in done:
                        current = txn.get("gc", raw_key)
                        if current is not None and current.get("t") == entry.get("t"):
                            txn.delete("gc", raw_key)

                self.index.commit(forget)
            if len(batch) < GC_BATCH:
                return

    def _remove_dead_volumes(self: Store, touched: set[Path], min_age: float, report: GcReport) -> None:
        """Unlink the volumes this pass emptied, once no process appends to them (:func:`.volumes.unlink_if_dead`)."""
        active = self.volumes.active_paths()
        for path in sorted(touched - active):
            try:
                if unlink_if_dead(path, min_age):
                    report.volumes_removed += 1
            except OSError as exc:
                log.info("volume %s not removed yet: %s", path, exc)

    def sweep_remote_orphans(self: Store, *, min_age: float | None = None, delete: bool = True) -> dict[str, Any]:
        """Objects on the remote tiers that no record or gc entry references: deleted once old and unlocked.

        Never deletes when the index may be incomplete (:meth:`index_trust`):
        then they are counted only (``index_problem`` says why). See
        :func:`.remotetier.sweep_remote_orphans`.
        """
        if not any(t.is_remote for t in self.config.tiers):
            return {}
        from .remotetier import sweep_remote_orphans  # boto3 only for stores with a remote tier

        problem = self.index_trust() if delete else None
        report = sweep_remote_orphans(
            self, min_age=self.config.gc_min_age if min_age is None else min_age, delete=delete and problem is None
        )
        if problem:
            report["index_problem"] = problem
        return report

    def _collect_one(
        self: Store,
        entry: dict[str, Any],
        now: float,
        min_age: float,
        held: set[str],
        report: GcReport,
        touched: set[Path],
        stoned: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> bool:
        desc = entry["blob"]
        blocked = self._blocked(entry, now, min_age, held)
        rec = entry.get("rec")
        if blocked == "waiting":
            report.waiting += 1
            return False
        if blocked == "leased":
            report.leased += 1
            return False
        if blocked == "locked":
            assert rec is not None
            report.locked += 1
            report.refused.append(f"{rec['bucket']}/{rec['key']}@{rec['version']}")
            log.error("refusing to collect %s/%s version %s: it is locked", rec["bucket"], rec["key"], rec["version"])
            return False
        locked = rec is not None and lock_active(rec, self.clock.now())
        if rec is not None and desc["id"] not in stoned:
            try:
                self._ensure_tombstone(rec, desc)
            except OSError:
                report.unreachable += 1
                return False
        if not self._delete_blob_files(desc, unlock=not locked or bool(entry.get("override")), report=report, touched=touched):
            report.unreachable += 1
            return False
        report.collected += 1
        if rec is not None:  # one line per collected version; its deletion was audited when it happened
            self.audit_maintenance("collect", "gc", rec, f"blob {desc['id']}", durable=False)
        return True

    def _delete_blob_files(
        self: Store, desc: dict[str, Any], *, unlock: bool, report: GcReport | None = None, touched: set[Path] | None = None
    ) -> bool:
        """Remove every fragment of a blob; True once none is left on any drive of the store.

        A fragment file is unlinked; a volume entry (``desc["vols"]``) is
        punched. An entry in an immutable volume (it holds locked data) keeps
        its bytes: they are counted in ``volume_bytes_kept`` and the entry
        counts as gone, since nothing can free it before the lock ends.
        """
        if desc.get("remote"):
            from .remotetier import delete_remote_blob  # boto3 only for stores with a remote tier

            return delete_remote_blob(self, desc, bypass=unlock)
        confirmed = True
        for index, drive_id in enumerate(desc["drives"]):
            drive = self.drive_by_id(drive_id)
            if drive is None:
                continue  # no longer a drive of this store: nothing of ours is left there
            if not self.drive_readable(drive):
                confirmed = False
                continue
            path, offset, length = fragment_location(drive, desc, index)
            if length is not None and not self._punch_entry(desc["id"], index, path, offset, length, report, touched):
                confirmed = False
            # A fragment file too: a repaired volume entry becomes one (heal), and older blobs have only files.
            path = drive.fragment_path(desc["id"], index)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except PermissionError:
                if not unlock:
                    confirmed = False
                    continue
                self.unlock_file(path)
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError:
                    confirmed = False
            except OSError:
                confirmed = False
        return confirmed

    def _punch_entry(
        self: Store,
        blob_id: str,
        index: int,
        path: Path,
        offset: int,
        length: int,
        report: GcReport | None,
        touched: set[Path] | None,
    ) -> bool:
        """Punch one volume entry of a retired blob; False when it may still be there (retry later)."""
        try:
            if not punch_entry(path, blob_id, index, offset, length):
                log.error("volume %s: the entry at %d is not fragment %d of blob %s; left alone", path, offset, index, blob_id)
                return True  # nothing of this blob is there
        except FileNotFoundError:
            return True  # the volume is gone (emptied and removed)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EACCES, errno.EOPNOTSUPP):
                return False
            # Immutable (locked data shares it) or the filesystem cannot punch: the bytes stay, dead.
            if report is not None:
                report.volume_bytes_kept += length + ENTRY_BYTES
            return True
        if report is not None:
            report.volume_entries_punched += 1
        if touched is not None:
            touched.add(path)
        return True
