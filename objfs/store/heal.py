"""Self-healing: the heal queue, scrub, orphan collection and status.

A read that had to rebuild a segment from parity queues the object for
healing (in LMDB, so the work survives a crash). Healing rewrites every
missing or corrupt fragment file from the surviving ones. Scrub verifies
every frame of every fragment, heals what it finds, finishes interrupted
garbage collection and removes fragments left by writes that never
committed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .blobs import BlobReader, delete_blob_files, process_start, writer_alive
from .drives import BLOBS, Drive, rendezvous_order
from .errors import DataLoss
from .fragments import FragmentWriter, read_footer
from .locks import lock_active

if TYPE_CHECKING:
    from .engine import Store

ORPHAN_GRACE = 3600.0  # an unreferenced file this old is garbage even if its writer looks alive


@dataclass
class ScrubReport:
    objects: int = 0
    blobs: int = 0
    fragments_checked: int = 0
    fragments_repaired: int = 0
    lost: list[str] = field(default_factory=list)
    orphans_removed: int = 0
    gc_finished: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class MaintenanceMixin:
    """Heal, scrub and status operations of :class:`objfs.store.Store`."""

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

    def process_heal_queue(self: Store) -> ScrubReport:
        """Heal every queued object (objects since deleted are dropped from the queue)."""
        report = ScrubReport()
        for item in self.heal_queue():
            record = self._record_by_id(item["bucket"], item["key"], item["id"])
            if record is not None:
                self._heal_record(record, report)
            with self.index.write() as txn:
                txn.delete("heal", item["id"].encode())
        return report

    def _record_by_id(self: Store, bucket: str, key: str, object_id: str) -> dict[str, Any] | None:
        from .index import object_key

        with self.index.read() as txn:
            current = txn.get("objects", object_key(bucket, key))
            if current is not None and current["id"] == object_id:
                return current
            for _, rec in txn.scan("versions", object_key(bucket, key) + b"\0"):
                if rec["id"] == object_id:
                    return rec
        return None

    def _heal_record(self: Store, record: dict[str, Any], report: ScrubReport) -> None:
        report.objects += 1
        moved = False
        repaired = report.fragments_repaired
        for desc in record.get("parts", []):
            report.blobs += 1
            try:
                moved |= self.heal_blob(desc, report)
            except DataLoss:
                report.lost.append(f"{record['bucket']}/{record['key']}@{record['version']}")
        if report.fragments_repaired > repaired and lock_active(record, self.clock.now()):
            # A rewritten fragment of a locked version must be as immutable as the one it replaces.
            self._protect_files(record, True)
        if moved:
            # A fragment moved to another drive: the record (and the drives' copy of it) must say so.
            self._write_meta_files(record)
            with self.index.write() as txn:
                self._store_record(txn, record)

    def heal_blob(self: Store, desc: dict[str, Any], report: ScrubReport) -> bool:
        """Verify every frame of a blob and rewrite the fragment files that are missing or corrupt.

        Returns True when a fragment had to be placed on another drive
        (``desc["drives"]`` is updated in place). Raises DataLoss when a
        segment has fewer than k good fragments.
        """
        total = desc["k"] + desc["m"]
        reader = BlobReader(self, desc)
        try:
            nseg = max(desc["nseg"], 1)
            for segment in range(nseg if desc["size"] else 0):
                for index in range(total):
                    report.fragments_checked += 1
                    reader.read_fragment(index, segment)
            if desc["size"] == 0:
                for index in range(total):
                    report.fragments_checked += 1
                    drive = reader.drives[index]
                    if drive is None or read_footer(drive.fragment_path(desc["id"], index)) is None:
                        reader.bad.add(index)
            bad = sorted(reader.bad)
            if not bad:
                return False
            if total - len(bad) < desc["k"]:
                raise DataLoss(f"blob {desc['id']}: {total - len(bad)} good fragments, {desc['k']} needed")
            footer = None
            for index in range(total):
                if index not in bad and reader.drives[index] is not None:
                    footer = read_footer(reader.drives[index].fragment_path(desc["id"], index))
                    if footer:
                        break
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
            writers = {}
            for index, drive in targets.items():
                tmp = drive.tmp_dir / f"{desc['id']}.f{index}.{os.getpid()}.tmp"
                writers[index] = FragmentWriter(tmp, drive.fragment_path(desc["id"], index))
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
                    self.unlock_file(writer.final_path)
                    writer.finish(dict(footer or {"blob": desc}, index=index))
                    report.fragments_repaired += 1
            except BaseException:
                for writer in writers.values():
                    writer.abort()
                raise
            return moved
        finally:
            reader.close()

    def _spare_drive(self: Store, desc: dict[str, Any], taken: set[Drive]) -> Drive | None:
        used = set(desc["drives"])
        for drive in rendezvous_order(desc["id"], self.drives[desc["tier"]]):
            if drive.drive_id not in used and drive not in taken and self.drive_healthy(drive):
                return drive
        return None

    # -- scrub -------------------------------------------------------------------

    def scrub(self: Store) -> ScrubReport:
        """Verify every object, heal damage, finish GC and remove orphans."""
        report = ScrubReport()
        self.refresh_drive_health()
        report.gc_finished = self.finish_gc()
        files = self._drive_files()
        with self.index.read() as txn:
            records = [r for _, r in txn.scan("objects")] + [r for _, r in txn.scan("versions")]
            parts = [p for _, p in txn.scan("parts")]
            referenced_objects = {r["id"] for r in records}
            referenced_blobs = {d["id"] for r in records for d in r.get("parts", [])}
            referenced_blobs |= {p["blob"]["id"] for p in parts}
        for record in records:
            if not record.get("delete_marker"):
                self._heal_record(record, report)
        for part in parts:
            report.blobs += 1
            try:
                self.heal_blob(part["blob"], report)
            except DataLoss:
                report.lost.append(f"part {part['number']} of upload {part['blob']['id']}")
        report.orphans_removed = self._remove_orphans(files, referenced_blobs, referenced_objects)
        with self.index.write() as txn:
            for record in records:
                txn.delete("heal", record["id"].encode())
        return report

    def finish_gc(self: Store) -> int:
        """Delete the files of blobs whose deletion was committed but not carried out."""
        with self.index.read() as txn:
            pending = [v for _, v in txn.scan("gc")]
        for item in pending:
            delete_blob_files(self, item["blob"])
        with self.index.write() as txn:
            for item in pending:
                txn.delete("gc", item["blob"]["id"].encode())
        return len(pending)

    def _drive_files(self: Store) -> list[tuple[Drive, Path]]:
        """Every fragment, meta and temp file on the healthy drives (listed before the index is read)."""
        out = []
        for drive in self.all_drives():
            if not self.drive_healthy(drive):
                continue
            for dirpath, _dirs, names in os.walk(drive.path / BLOBS):
                out.extend((drive, Path(dirpath) / n) for n in names)
            try:
                out.extend((drive, drive.tmp_dir / n) for n in os.listdir(drive.tmp_dir))
            except OSError:
                pass
        return out

    def _remove_orphans(self: Store, files, referenced_blobs: set[str], referenced_objects: set[str]) -> int:
        removed = 0
        now = time.time()
        for drive, path in files:
            name = path.name
            try:
                age = now - path.stat().st_mtime
            except OSError:
                continue
            if name.endswith(".tmp"):
                # temp names end in .<pid>.tmp; a dead writer's temp file is garbage
                try:
                    pid = int(name.split(".")[-2])
                except (ValueError, IndexError):
                    pid = -1
                if process_start(pid) is not None and age < ORPHAN_GRACE:
                    continue
            elif name.endswith(".meta"):
                # A rename, retention change or multipart completion writes its
                # meta file just before its commit: give it a minute.
                if name[: -len(".meta")] in referenced_objects or age < 60:
                    continue
            else:
                blob_id, _, _ = name.partition(".f")
                if blob_id in referenced_blobs:
                    continue
                footer = read_footer(path)
                if footer is not None and writer_alive(footer.get("writer")) and age < ORPHAN_GRACE:
                    continue
            self.unlock_file(path)
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
        return removed

    # -- status ------------------------------------------------------------------

    def status(self: Store) -> dict[str, Any]:
        """Drives (health, free space), object and byte counts, degraded objects, heal queue."""
        drives = []
        for drive in self.all_drives():
            healthy = self.drive_healthy(drive)
            entry: dict[str, Any] = {"id": drive.drive_id, "tier": drive.tier, "path": str(drive.path), "healthy": healthy}
            if healthy:
                free, total = drive.free_bytes()
                entry.update(free=free, total=total, immutable_flag=self.immutable_supported(drive))
            drives.append(entry)
        objects = versions = size = 0
        with self.index.read() as txn:
            for _, rec in txn.scan("objects"):
                if not rec.get("delete_marker"):
                    objects += 1
                    size += rec["size"]
            for _, rec in txn.scan("versions"):
                versions += 1
                size += rec["size"]
            heal = txn.count("heal")
            buckets = txn.count("buckets")
            uploads = txn.count("uploads")
        return {
            "store": str(self.root),
            "drives": drives,
            "buckets": buckets,
            "objects": objects,
            "noncurrent_versions": versions,
            "bytes": size,
            "degraded_objects": heal,
            "heal_queue": heal,
            "multipart_uploads": uploads,
        }
