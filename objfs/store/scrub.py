"""Scrub: verify everything, repair what is damaged, collect only what is proven garbage.

One pass does, in order:

1. sweeps the spool (files whose owner process is gone);
2. checks that the index is the one the drives know (:meth:`ScrubMixin.index_trust`):
   an empty, replaced or rolled-back index is reported with the advice to run
   ``objfs rebuild-index``, and nothing on the drives is judged by it;
3. runs the garbage collector (:mod:`.gc`: durable gc entries only);
4. verifies every frame and footer of every version and multipart part in the
   index, repairing from parity; a version beyond repair is reported (once it
   is certain it is still live) and keeps its heal entry;
5. walks the drives: temp files of dead writers are removed (never renamed
   into place, so never part of an object); fragment files referenced by
   nothing are *counted, not deleted*, except those named by the intent
   journal of a dead writer whose index is this one (:mod:`.intents`);
6. records on each drive which index it was scrubbed against.

Per-drive errors are reported and never end the pass.
"""

from __future__ import annotations

import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .crypto import unseal_record
from .drives import BLOBS, BUCKETS, Drive
from .fragments import read_footer
from .heal import HealReport
from .index import object_key
from .procs import identity_alive, process_start

if TYPE_CHECKING:
    from .engine import Store

log = logging.getLogger(__name__)

INDEX_SEEN = ".objfs-index"
_TMP_OWNER = re.compile(r"\.(\d+)(?:-(\d+))?\.tmp$")


@dataclass
class ScrubReport(HealReport):
    index_trusted: bool = True
    index_problem: str | None = None
    gc: dict[str, Any] = field(default_factory=dict)
    spool_removed: int = 0
    temp_removed: int = 0
    intents_collected: int = 0
    metas_reconciled: int = 0
    unreferenced_fragments: int = 0
    #: Objects on remote tiers that nothing references (counted here; ``objfs gc`` deletes the old, unlocked ones).
    remote_orphans: int = 0


class ScrubMixin:
    """Scrub operations of :class:`objfs.store.Store`."""

    def index_trust(self: Store) -> str | None:
        """Why the index cannot be trusted to judge what the drives hold, or None.

        The index is distrusted when it is empty while the drives hold data
        (lost), when it is not the index the drives were last scrubbed or
        rebuilt against (replaced), or when it is older than that (restored
        from a backup).
        """
        state = self.index.state()
        with self.index.read() as txn:
            empty = txn.count("buckets") == 0 and txn.count("objects") == 0
        for drive in self.all_drives():
            if not self.drive_readable(drive):
                continue
            seen = _read_seen(drive)
            if seen is not None:
                if seen.get("index_id") != state["index_id"]:
                    return "the index is not the one the drives were last scrubbed with (lost or replaced)"
                if int(seen.get("txnid", 0)) > state["txnid"]:
                    return "the index is older than the drives (restored from a backup?)"
            if empty and _holds_data(drive):
                return "the index is empty but the drives hold data (the index was lost)"
        return None

    def mark_index_seen(self: Store) -> None:
        """Record on every writable drive that it agrees with this index (scrub, rebuild-index)."""
        body = json.dumps(self.index.state())
        for drive in self.all_drives():
            if not self.drive_healthy(drive):
                continue
            path = drive.path / INDEX_SEEN
            tmp = drive.tmp_dir / f"{INDEX_SEEN}.tmp"
            try:
                tmp.write_text(body)
                os.replace(tmp, path)
            except OSError as exc:
                log.warning("drive %s: cannot record the index it was scrubbed with: %s", drive.drive_id, exc)

    def scrub(self: Store) -> ScrubReport:
        """Verify every object, heal damage, collect proven garbage; see the module docstring."""
        report = ScrubReport()
        self.refresh_drive_health()
        report.spool_removed = self.sweep_spool()
        report.index_problem = self.index_trust()
        report.index_trusted = report.index_problem is None
        if report.index_problem:
            log.error("scrub: %s; nothing on the drives is judged by it: run `objfs rebuild-index`", report.index_problem)
        report.gc = self.collect_garbage().as_dict()
        # Journals of writers dead *before* the index is read: none of them can commit after it.
        journals = self._dead_journals() if report.index_trusted else []
        pending = {blob_id: journal for journal in journals for blob_id in journal.uncommitted}
        referenced = self._verify_all(report)
        with ThreadPoolExecutor(max_workers=max(1, len(self.all_drives()))) as pool:
            results = list(pool.map(lambda d: self._walk_drive(d, referenced, pending), self.all_drives()))
        for removed, unreferenced, errors in results:
            report.temp_removed += removed
            report.unreferenced_fragments += unreferenced
            report.drive_errors += errors
        report.remote_orphans = self.sweep_remote_orphans(delete=False).get("orphans", 0)
        if report.index_trusted:
            report.metas_reconciled = self.reconcile_metas([w for j in journals for w in j.unsettled_meta])
            report.intents_collected = self._collect_intents(referenced, pending, journals)
            self.mark_index_seen()
        if report.unreferenced_fragments:
            log.warning(
                "scrub: %d fragment files belong to no version in the index; kept (run `objfs rebuild-index` if the index was lost)",
                report.unreferenced_fragments,
            )
        return report

    def _verify_all(self: Store, report: ScrubReport) -> set[str]:
        """Verify and repair every version and part; returns the blob ids the index references."""
        referenced: set[str] = set()
        for db in ("objects", "versions"):
            for record in self._scan_batches(db):
                referenced.update(d["id"] for d in record.get("parts", []))
                if record.get("delete_marker"):
                    continue
                if self._heal_record(record, report):
                    with self.index.write() as txn:
                        txn.delete("heal", record["id"].encode())
        for part in self._scan_batches("parts"):
            referenced.add(part["blob"]["id"])
            report.blobs += 1
            try:
                self.heal_blob(part["blob"], report)
            except Exception as exc:  # DataLoss, or the upload finished meanwhile
                if self._part_is_live(part):
                    report.lost.append(f"part {part['number']} of upload {part['blob']['id']}: {exc}")
        for entry in self._scan_batches("gc"):
            referenced.add(entry["blob"]["id"])
        return referenced

    def _scan_batches(self: Store, db: str, size: int = 1000):
        """Every value of ``db``, read in short transactions (no long-lived reader pins old pages)."""
        start = b""
        while True:
            with self.index.read() as txn:
                batch = []
                for key, value in txn.scan(db, start=start):
                    if key == start:
                        continue
                    batch.append((key, value))
                    if len(batch) >= size:
                        break
            for _, value in batch:
                yield value
            if len(batch) < size:
                return
            start = batch[-1][0]

    def _part_is_live(self: Store, part: dict[str, Any]) -> bool:
        with self.index.read() as txn:
            for _, value in txn.scan("parts"):
                if value["blob"]["id"] == part["blob"]["id"]:
                    return True
        return False

    def _walk_drive(self: Store, drive: Drive, referenced: set[str], pending: dict[str, Any]) -> tuple[int, int, list[str]]:
        """(temp files removed, unreferenced fragment files, errors) for one drive."""
        state = self.drive_state(drive)
        errors: list[str] = [] if state == "ok" else [f"{drive.drive_id}: {state}"]
        if not self.drive_readable(drive):
            return 0, 0, errors
        removed = unreferenced = 0
        try:
            names = os.listdir(drive.tmp_dir)
        except OSError as exc:
            names = []
            errors.append(f"{drive.drive_id}: {exc.strerror}")
        for name in names:
            if name.endswith(".tmp") and not _tmp_owner_alive(name):
                try:
                    os.unlink(drive.tmp_dir / name)
                    removed += 1
                except OSError as exc:
                    errors.append(f"{drive.drive_id}: {exc.strerror}")
        for dirpath, _dirs, files in os.walk(drive.path / BLOBS, onerror=lambda e: errors.append(f"{drive.drive_id}: {e}")):
            for name in files:
                if name.endswith(".meta"):
                    continue
                blob_id, sep, _ = name.partition(".f")
                if sep and blob_id not in referenced and blob_id not in pending:
                    if not self._claimed_since(Path(dirpath) / name):
                        unreferenced += 1
        return removed, unreferenced, errors

    def _claimed_since(self: Store, path: Path) -> bool:
        """Whether a fragment the index scan did not know is being written, or was committed since."""
        footer = read_footer(path)
        if footer is None:
            return False
        if identity_alive(footer.get("writer")):
            return True
        blob_id = footer["blob"]["id"]
        owner = unseal_record(self.encryption, footer.get("owner") or {})
        with self.index.read() as txn:
            if txn.get("gc", blob_id.encode()) is not None:
                return True
            if "upload" in owner:
                if any(p["blob"]["id"] == blob_id for _, p in txn.scan("parts", owner["upload"].encode() + b"\0")):
                    return True
                # A completed upload: its record (named by the upload id) says where it went.
                owner = self.newest_meta(owner["upload"]) or {}
            if "bucket" in owner and "key" in owner:
                prefix = object_key(owner["bucket"], owner["key"])
                current = txn.get("objects", prefix)
                records = ([current] if current else []) + [r for _, r in txn.scan("versions", prefix + b"\0")]
                return any(d["id"] == blob_id for r in records for d in r.get("parts", []))
        return False

    def _dead_journals(self: Store) -> list[Any]:
        """Intent journals of dead processes written against *this* index (no newer one)."""
        state = self.index.state()
        out = []
        for journal in self.intents.dead_journals():
            header = journal.header
            if header.get("index_id") != state["index_id"] or int(header.get("txnid", 1 << 62)) > state["txnid"]:
                continue  # written against another (or a newer) index: this one cannot judge it
            out.append(journal)
        return out

    def _collect_intents(self: Store, referenced: set[str], pending: dict[str, Any], settled: list[Any]) -> int:
        """Delete the fragments of blobs dead writers never committed; remove the journals so settled."""
        collected = 0
        journals = {journal.path: journal for journal in settled}
        for blob_id in pending:
            if blob_id not in referenced:
                self._delete_uncommitted(blob_id)
                collected += 1
        for journal in self.intents.dead_journals():
            if journal.path in journals or not (journal.uncommitted or journal.unsettled_meta):
                try:
                    journal.path.unlink()
                except OSError:
                    pass
        return collected

    def _delete_uncommitted(self: Store, blob_id: str) -> None:
        width = max(t.k + t.m for t in self.config.tiers)  # a blob of any tier
        for drive in self.all_drives():
            if not self.drive_readable(drive):
                continue
            for index in range(width):
                try:
                    os.unlink(drive.fragment_path(blob_id, index))
                except OSError:
                    pass


def _read_seen(drive: Drive) -> dict[str, Any] | None:
    try:
        return json.loads((drive.path / INDEX_SEEN).read_text())
    except (OSError, ValueError):
        return None


def _holds_data(drive: Drive) -> bool:
    for sub in (BUCKETS, BLOBS):
        try:
            with os.scandir(drive.path / sub) as it:
                if next(it, None) is not None:
                    return True
        except OSError:
            continue
    return False


def _tmp_owner_alive(name: str) -> bool:
    """Whether the writer named in a temp file's name (``.<pid>-<start>.tmp``, or an older ``.<pid>.tmp``) still runs."""
    match = _TMP_OWNER.search(name)
    if match is None:
        return True  # not a name we gave
    start = process_start(int(match.group(1)))
    if match.group(2) is None:
        return start is not None
    return start == int(match.group(2))
