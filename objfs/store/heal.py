"""Self-healing: the heal queue and the repair of one blob.

A read that had to rebuild a segment from parity queues the object for
healing (in LMDB, so the work survives a crash). Healing rewrites every
missing or corrupt fragment file (a bad frame CRC, or a footer that is
damaged or names another blob) from the surviving ones, on its own drive
when that drive takes writes, else on a spare drive of the tier (the record
and the drives' copy of it then say so). A heal entry is removed only when
the object is healed or no longer exists; an object beyond repair keeps its
entry, so ``objfs status`` keeps counting it (as lost). Per-drive errors are reported
and never stop the repair of the other drives or objects.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .blobs import BlobReader, fragment_location
from .drives import BLOBS, Drive, rendezvous_order
from .errors import DataLoss
from .fragments import FragmentWriter, owner_tag, read_footer
from .index import object_key, version_key
from .locks import lock_active
from .opstatus import drive_smart, operations
from .reports import Report

if TYPE_CHECKING:
    from .engine import Store

log = logging.getLogger(__name__)


@dataclass
class HealReport(Report):
    objects: int = 0
    blobs: int = 0
    fragments_checked: int = 0
    fragments_repaired: int = 0
    lost: list[str] = field(default_factory=list)
    drive_errors: list[str] = field(default_factory=list)

    def merge(self, other: HealReport) -> None:
        """Add the counts and findings of ``other`` (one worker's share of a pass)."""
        for name in ("objects", "blobs", "fragments_checked", "fragments_repaired"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.lost += other.lost
        self.drive_errors += other.drive_errors


class MaintenanceMixin:
    """Heal operations of :class:`objfs.store.Store`."""

    def queue_heal(self: Store, record: dict[str, Any], reason: str) -> None:
        """Remember that ``record`` needs healing; durable when it returns."""
        with self.index.write() as txn:
            txn.put(
                "heal",
                record["id"].encode(),
                {
                    "bucket": record["bucket"],
                    "key": record["key"],
                    "version": record["version"],
                    "reason": reason,
                    "t": self.clock.now(),
                },
            )

    def heal_queue(self: Store) -> list[dict[str, Any]]:
        with self.index.read() as txn:
            return [dict(v, id=k.decode()) for k, v in txn.scan("heal")]

    def process_heal_queue(self: Store, progress: Any = None) -> HealReport:
        """Heal every queued object; entries of healed or vanished objects are removed, lost ones stay.

        ``progress`` (an :class:`objfs.store.progress.Progress`) gets the queue's
        length as total and one ``advance`` per entry.
        """
        report = HealReport()
        queue = self.heal_queue()
        if progress is not None:
            progress.set_total(len(queue))
        for item in queue:
            if progress is not None:
                progress.advance(1)
            record = self._record_by_id(item["bucket"], item["key"], item["id"])
            lost_before = len(report.lost)
            if record is not None:
                self._heal_record(record, report)
            if record is None or len(report.lost) == lost_before:
                with self.index.write() as txn:
                    txn.delete("heal", item["id"].encode())
        return report

    def _record_by_id(self: Store, bucket: str, key: str, object_id: str) -> dict[str, Any] | None:
        with self.index.read() as txn:
            current = txn.get("objects", object_key(bucket, key))
            if current is not None and current["id"] == object_id:
                return current
            for _, rec in txn.scan("versions", object_key(bucket, key) + b"\0"):
                if rec["id"] == object_id:
                    return rec
        return None

    def _heal_record(self: Store, record: dict[str, Any], report: HealReport) -> bool:
        """Verify and repair one version; True when it is whole afterwards."""
        report.objects += 1
        moved = False
        repaired = report.fragments_repaired
        whole = True
        self.leases.hold([d["id"] for d in record.get("parts", [])])
        try:
            for desc in record.get("parts", []):
                report.blobs += 1
                try:
                    moved |= self.heal_blob(desc, report)
                except DataLoss as exc:
                    # A version retired while we looked is not lost: only report what is still live.
                    if self.record_is_live(record):
                        whole = False
                        report.lost.append(f"{record['bucket']}/{record['key']}@{record['version']}")
                        log.error(
                            "%s/%s version %s is beyond repair: %s", record["bucket"], record["key"], record["version"], exc
                        )
                        self.queue_heal(record, f"beyond repair: {exc}")
                    break
        finally:
            self.leases.release([d["id"] for d in record.get("parts", [])])
        if report.fragments_repaired > repaired:
            if lock_active(record, self.clock.now()):
                # A rewritten fragment of a locked version must be as immutable as the one it replaces.
                self._protect_files(record, True)
            detail = f"{report.fragments_repaired - repaired} fragments rewritten"
            self.audit_maintenance("heal", "heal", record, detail, durable=True)
        if moved:
            self._record_new_placement(record)
        return whole

    def _record_new_placement(self: Store, record: dict[str, Any]) -> None:
        """A fragment moved to a spare drive: the record (and the drives' copy of it) must say so.

        Only the placement changes; attributes changed meanwhile by others are kept.
        """
        placement = {d["id"]: (d["drives"], d.get("vols")) for d in record.get("parts", [])}

        def placed(desc: dict[str, Any]) -> dict[str, Any]:
            if desc["id"] not in placement:
                return desc
            drives, vols = placement[desc["id"]]
            new = dict(desc, drives=drives)
            if vols is not None:
                new["vols"] = vols
            return new

        for _attempt in range(5):
            current = self._record_by_id(record["bucket"], record["key"], record["id"])
            if current is None:
                return
            new = dict(current, gen=time.time_ns())
            new["parts"] = [placed(d) for d in current.get("parts", [])]

            def commit(txn, current=current, new=new) -> bool:
                found = txn.get("objects", object_key(current["bucket"], current["key"]))
                if found is None or found["id"] != current["id"]:
                    found = txn.get("versions", version_key(current["bucket"], current["key"], current["seq"]))
                if found is None or found.get("gen") != current.get("gen"):
                    return False
                self._store_record(txn, new)
                return True

            where = {"id": current["id"], "bucket": current["bucket"], "key": current["key"], "gen": new["gen"]}
            with self._meta_change([where]):
                self._write_meta_files(new)
                if self.index.commit(commit):
                    return
                self.reconcile_metas([where])  # raced: the drives say what the index says, then retry

    def heal_blob(self: Store, desc: dict[str, Any], report: HealReport) -> bool:
        """Verify every frame and footer of a blob and rewrite the fragments that are missing or corrupt.

        Returns True when the record must be updated: a fragment was placed
        on another drive (``desc["drives"]`` is updated in place), or a bad
        volume entry was rewritten as a fragment file (its ``desc["vols"]``
        place becomes None). Raises DataLoss when a segment has fewer than
        k good fragments.
        """
        if desc.get("remote"):
            return False  # a remote tier's object: the remote keeps it whole (nothing of it is on our drives)
        total = desc["k"] + desc["m"]
        reader = BlobReader(self, desc)
        try:
            for segment in range(desc["nseg"] if desc["size"] else 0):
                for index in range(total):
                    report.fragments_checked += 1
                    reader.read_fragment(index, segment)
            footer = None
            for index in range(total):
                if desc["size"] == 0:
                    report.fragments_checked += 1
                drive = reader.drives[index]
                found = read_footer(*fragment_location(drive, desc, index)) if drive is not None else None
                if found is None or found.get("blob", {}).get("id") != desc["id"] or found.get("index", index) != index:
                    reader.bad.add(index)
                elif footer is None:
                    footer = found
            bad = sorted(reader.bad)
            if not bad:
                return False
            if total - len(bad) < desc["k"]:
                raise DataLoss(f"blob {desc['id']}: {total - len(bad)} good fragments, {desc['k']} needed")
            return self._rewrite_fragments(desc, reader, bad, footer, report)
        finally:
            reader.close()

    def _rewrite_fragments(self: Store, desc, reader: BlobReader, bad: list[int], footer, report: HealReport) -> bool:
        total = desc["k"] + desc["m"]
        moved = False
        targets: dict[int, Drive] = {}
        for index in bad:
            drive = reader.drives[index]
            if drive is None or not self.drive_healthy(drive):
                drive = self._spare_drive(desc, set(targets.values()))
                if drive is None:
                    continue  # nowhere to put it until the drive comes back
                desc["drives"][index] = drive.drive_id
                moved = True
            targets[index] = drive
            vols = desc.get("vols")
            if vols and vols[index]:
                # A volume entry is never rewritten in place: the repair is a fragment file.
                desc["vols"] = [None if i == index else loc for i, loc in enumerate(vols)]
                moved = True
        writers: dict[int, FragmentWriter] = {}
        tag = owner_tag()
        for index, drive in targets.items():
            tmp = drive.tmp_dir / f"{desc['id']}.f{index}.{tag}.tmp"
            try:
                writers[index] = FragmentWriter(
                    tmp, drive.fragment_path(desc["id"], index), drive.path / BLOBS, block=desc.get("cb", 0)
                )
            except OSError as exc:
                self._drive_error(drive, exc, report)
        try:
            for segment in range(desc["nseg"] if desc["size"] else 0):
                good = {
                    i: f
                    for i, f in ((i, reader.read_fragment(i, segment)) for i in range(total) if i not in bad)
                    if f is not None
                }
                rebuilt = reader.codec.reconstruct(good, list(writers))
                for index, writer in writers.items():
                    writer.write_frame(rebuilt[index])
            if desc["size"] == 0:
                frags = reader.codec.encode(b"")
                for index, writer in writers.items():
                    writer.write_frame(frags[index])
            for index, writer in writers.items():
                try:
                    self.unlock_file(writer.final_path)
                    writer.finish(dict(footer or {"blob": desc}, index=index))
                    report.fragments_repaired += 1
                except OSError as exc:
                    writer.abort()
                    self._drive_error(self.drive_by_id(desc["drives"][index]), exc, report)
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        return moved

    def _drive_error(self: Store, drive: Drive | None, exc: OSError, report: HealReport) -> None:
        name = drive.drive_id if drive is not None else "?"
        report.drive_errors.append(f"{name}: {exc.strerror or exc}")
        log.warning("drive %s: %s", name, exc)
        if drive is not None:
            self.mark_drive_suspect(drive)

    def _spare_drive(self: Store, desc: dict[str, Any], taken: set[Drive]) -> Drive | None:
        used = set(desc["drives"])
        for drive in rendezvous_order(desc["id"], self.drives[desc["tier"]]):
            if drive.drive_id not in used and drive not in taken and self.drive_healthy(drive):
                return drive
        return None

    # -- status ------------------------------------------------------------------

    def _remote_tier_status(self: Store, tier: Any) -> dict[str, Any]:
        """A remote S3 tier: its endpoint and bucket, and whether it answers (no drives, no EC profile of ours)."""
        from .remotetier import probe_remote_tier  # boto3 only for stores with a remote tier

        entry = {"name": tier.name, "ec": "remote", "k": 0, "m": 0, "drives": 0, "drives_ok": 0}
        entry.update(raw_bytes=0, raw_free_bytes=0, usable_bytes=0, usable_free_bytes=0, redundancy_left=0)
        return dict(entry, **probe_remote_tier(self, tier))

    def status(self: Store) -> dict[str, Any]:
        """The store as an operator needs it: tiers, drives, counts, queues, and whether it is degraded.

        Per tier: EC profile, raw and usable capacity (drives that share a
        filesystem, as directory drives on one disk do, are counted once),
        and ``redundancy_left``: how many more drives the tier can lose
        before data becomes unreadable (m minus the drives not ok; below 0,
        objects are unreadable now). ``degraded`` lists why the store is
        not whole: a drive not ok, objects waiting for healing, objects lost,
        a remote tier that does not answer (asked with a short timeout; such
        a tier shows ``remote``, ``endpoint``, ``bucket``, ``reachable``
        instead of drives).
        """
        drives = []
        tiers = []
        for tier in self.config.tiers:
            if tier.is_remote:
                tiers.append(self._remote_tier_status(tier))
                continue
            seen: dict[int, str] = {}
            raw_total = raw_free = 0
            not_ok = 0
            for drive in self.drives[tier.name]:
                state = self.drive_state(drive)
                not_ok += state != "ok"
                entry: dict[str, Any] = {
                    "id": drive.drive_id,
                    "tier": drive.tier,
                    "path": str(drive.path),
                    "state": state,
                    "healthy": state == "ok",
                    "smart": drive_smart(self, drive.path),
                }
                if self.drive_readable(drive):
                    try:
                        dev = os.stat(drive.path).st_dev
                        free, total = drive.free_bytes()
                    except OSError:
                        dev = None
                    if dev is not None:
                        entry.update(free=free, total=total, immutable_flag=self.immutable_supported(drive))
                        if dev in seen:
                            entry["shares_filesystem_with"] = seen[dev]
                        else:
                            seen[dev] = drive.drive_id
                            raw_total += total
                            raw_free += free
                drives.append(entry)
            scale = tier.k / (tier.k + tier.m)
            tiers.append(
                {
                    "name": tier.name,
                    "ec": f"{tier.k}+{tier.m}",
                    "k": tier.k,
                    "m": tier.m,
                    "drives": len(self.drives[tier.name]),
                    "drives_ok": len(self.drives[tier.name]) - not_ok,
                    "raw_bytes": raw_total,
                    "raw_free_bytes": raw_free,
                    "usable_bytes": int(raw_total * scale),
                    "usable_free_bytes": int(raw_free * scale),
                    "redundancy_left": tier.m - not_ok,
                }
            )
        lost = 0
        counted = self.counters.totals()  # kept counters (:mod:`.counters`), not a scan of the index
        for tier in tiers:
            usage = counted["per_tier"].get(tier["name"], {})
            tier["versions"] = usage.get("versions", 0)
            tier["stored_bytes"] = usage.get("bytes", 0)
        with self.index.read() as txn:
            for _, item in txn.scan("heal"):
                lost += str(item.get("reason", "")).startswith("beyond repair")
            heal = txn.count("heal")
            buckets = txn.count("buckets")
            uploads = txn.count("uploads")
            gc = txn.count("gc")
        degraded = [f"drive {d['id']} is {d['state']}" for d in drives if d["state"] != "ok"]
        if heal - lost:
            degraded.append(f"{heal - lost} objects wait for healing")
        if lost:
            degraded.append(f"{lost} objects are lost (beyond repair)")
        degraded += [
            f"tier {t['name']} has lost more drives than its {t['m']} parity: objects are unreadable"
            for t in tiers
            if t["redundancy_left"] < 0
        ]
        degraded += [
            f"tier {t['name']}: remote {t['remote']} bucket {t['bucket']} does not answer ({t['problem']})"
            for t in tiers
            if t.get("remote") and not t["reachable"]
        ]
        degraded += [
            f"drive {d['id']}: SMART health check failed on {d['smart']['device']} (replace the disk)"
            for d in drives
            if d["smart"]["health"] == "failed"
        ]
        background = operations(self)
        return {
            "store": str(self.root),
            "format": self.config.format,
            "tiers": tiers,
            "drives": drives,
            "buckets": buckets,
            "objects": counted["objects"],
            "noncurrent_versions": counted["noncurrent_versions"],
            "bytes": counted["bytes"],
            "per_bucket": counted["per_bucket"],
            "degraded_objects": heal,
            "lost_objects": lost,
            "heal_queue": heal,
            "gc_queue": gc,
            "multipart_uploads": uploads,
            **background,  # lifecycle, replication (backlog, lag), last_scrub
            "degraded": degraded,
        }
