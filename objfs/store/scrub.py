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
   into place, so never part of an object); fragment files and volume
   entries (:mod:`.volumes`) referenced by nothing are *counted, not
   deleted*, except those named by the intent journal of a dead writer whose
   index is this one (:mod:`.intents`): their files are unlinked, their
   entries punched;
6. records on each drive which index it was scrubbed against.

Per-drive errors are reported and never end the pass.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .crypto import unseal_record
from .drives import BLOBS, BUCKETS, Drive
from .fragments import read_footer
from .heal import HealReport
from .index import object_key
from .opstatus import record_scrub
from .procs import identity_alive, process_start
from .progress import Progress
from .spill import SortedMembership, SortedSpill, sorted_fragments
from .volumes import VOLUMES, entry_at, list_volumes, punch_entry, scan, unlink_if_dead, volume_dir

if TYPE_CHECKING:
    from .engine import Store

log = logging.getLogger(__name__)

INDEX_SEEN = ".objfs-index"
_SCAN_ORDER = ("objects", "versions", "parts", "gc")
_RESUMED_FIELDS = ("objects", "blobs", "fragments_checked", "fragments_repaired", "lost")
#: Volume entries listed per sorted chunk when a drive's volumes are joined with the index (bounded memory).
VOLUME_SPILL_CHUNK = 50_000
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

    def scrub(self: Store, *, progress: TextIO | None = None, batch: int = 1000, checkpoint_seconds: float = 5.0) -> ScrubReport:
        """Verify every object, heal damage, collect proven garbage; see the module docstring.

        Memory stays bounded whatever the store's size: the blob ids the
        index references are spilled to sorted files under ``run/scrub``
        and merge-joined with each drive's sorted listing. Progress is
        checkpointed there too, so a scrub killed half-way continues where
        it stopped when run again. ``progress`` gets a line every few
        seconds; ``batch`` is how many records are verified between
        checkpoints of the index scan, taken at most every ``checkpoint_seconds``.
        """
        report = ScrubReport()
        started = time.time()
        self.refresh_drive_health()
        report.spool_removed = self.sweep_spool()
        report.index_problem = self.index_trust()
        report.index_trusted = report.index_problem is None
        if report.index_problem:
            log.error("scrub: %s; nothing on the drives is judged by it: run `objfs rebuild-index`", report.index_problem)
        report.gc = self.collect_garbage().as_dict()
        run = _ScrubRun(self, report, checkpoint_seconds)
        try:
            self._scrub(report, run, progress, batch)
        finally:
            run.close()
        record_scrub(self, report, started, time.time())  # `objfs status`: last scrub and its result
        return report

    def _scrub(self: Store, report: ScrubReport, run: _ScrubRun, progress: TextIO | None, batch: int) -> ScrubReport:
        # Journals of writers dead *before* the index is read: none of them can commit after it.
        # A resumed scrub keeps the set its first run saw (its index scan began before the others died).
        dead = self._dead_journals() if report.index_trusted else []
        if run.saved_journals is not None and any(
            str(j.path) not in run.saved_journals and (j.uncommitted or j.unsettled_meta) for j in dead
        ):
            # A writer died since the stopped scrub began: what it committed may sit in the part of the
            # index already scanned, so only a whole new scan can tell its leftovers: start over.
            log.info("scrub: writers died since the stopped scrub began; starting over")
            run.start_over()
        journals = [j for j in dead if run.saved_journals is None or str(j.path) in run.saved_journals]
        run.save_journals([str(j.path) for j in journals])
        pending = {blob_id: journal for journal in journals for blob_id in journal.uncommitted}
        explained = set(pending) | {blob_id for journal in dead for blob_id in journal.uncommitted}
        self._verify_all(report, run, progress, batch)
        drives = self.all_drives()
        walked = Progress.to(progress, "scrub: drive directories walked", 256 * len(drives), done=run.walked_dirs())
        with ThreadPoolExecutor(max_workers=max(1, len(drives))) as pool:
            results = list(pool.map(lambda d: self._walk_drive(d, run, explained, walked), drives))
        walked.close()
        for removed, unreferenced, errors in results:
            report.temp_removed += removed
            report.unreferenced_fragments += unreferenced
            report.drive_errors += errors
        report.remote_orphans = self.sweep_remote_orphans(delete=False).get("orphans", 0)
        if report.index_trusted:
            report.metas_reconciled = self.reconcile_metas([w for j in journals for w in j.unsettled_meta])
            report.intents_collected = self._collect_intents(run.referenced, pending, journals, run.pending_entries())
            self.mark_index_seen()
        run.finish()
        if report.unreferenced_fragments:
            log.warning(
                "scrub: %d fragment files or volume entries belong to no version in the index; kept"
                " (run `objfs rebuild-index` if the index was lost)",
                report.unreferenced_fragments,
            )
        return report

    def _verify_all(self: Store, report: ScrubReport, run: _ScrubRun, progress: TextIO | None, batch: int) -> None:
        """Verify and repair every version and part, spilling the blob ids the index references.

        Records are verified a batch at a time by a thread per drive; heal
        entries of whole records are dropped in one short transaction per
        batch; the position is checkpointed whenever the spill is flushed.
        """
        with self.index.read() as txn:
            total = sum(txn.count(db) for db in _SCAN_ORDER)
        done = run.state.get("verified", 0)
        bar = Progress.to(progress, "scrub: records verified", total, done=done)
        workers = max(2, len(self.all_drives()))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for db in _SCAN_ORDER:
                if run.db_done(db):
                    continue
                for keys, values in self._scan_chunks(db, run.resume_key(db), batch):
                    if db in ("objects", "versions"):
                        for record in values:
                            run.referenced.update(d["id"] for d in record.get("parts", []))
                        todo = [r for r in values if not r.get("delete_marker")]
                        outcomes = list(pool.map(lambda r: self._verify_record(r), todo))
                        whole = [r["id"] for r, (part, ok) in zip(todo, outcomes) if ok]
                        for part, _ok in outcomes:
                            report.merge(part)
                        self._forget_healed(whole)
                    elif db == "parts":
                        run.referenced.update(p["blob"]["id"] for p in values)
                        for part in pool.map(lambda p: self._verify_part(p), values):
                            report.merge(part)
                    else:
                        run.referenced.update(e["blob"]["id"] for e in values)
                    bar.advance(len(values))
                    run.advance(db, keys[-1], len(values))
                run.db_finished(db)
        bar.close()

    def _verify_record(self: Store, record: dict[str, Any]) -> tuple[HealReport, bool]:
        part = HealReport()
        return part, self._heal_record(record, part)

    def _verify_part(self: Store, part: dict[str, Any]) -> HealReport:
        out = HealReport()
        out.blobs += 1
        try:
            self.heal_blob(part["blob"], out)
        except Exception as exc:  # DataLoss, or the upload finished meanwhile
            if self._part_is_live(part):
                out.lost.append(f"part {part['number']} of upload {part['blob']['id']}: {exc}")
        return out

    def _forget_healed(self: Store, object_ids: list[str]) -> None:
        """Drop the heal entries of versions found whole: one short write, only when there are any."""
        with self.index.read() as txn:
            queued = [i for i in object_ids if txn.get("heal", i.encode()) is not None]
        if queued:
            with self.index.write() as txn:
                for object_id in queued:
                    txn.delete("heal", object_id.encode())

    def _scan_chunks(self: Store, db: str, start: bytes | None, size: int):
        """``(keys, values)`` of ``db`` after ``start``, ``size`` at a time, each read in its own short transaction."""
        start = start or b""
        while True:
            with self.index.read() as txn:
                keys, values = [], []
                for key, value in txn.scan(db, start=start):
                    if key == start:
                        continue
                    keys.append(key)
                    values.append(value)
                    if len(keys) >= size:
                        break
            if keys:
                yield keys, values
            if len(keys) < size:
                return
            start = keys[-1]

    def _scan_batches(self: Store, db: str, size: int = 1000):
        """Every value of ``db``, read in short transactions (no long-lived reader pins old pages)."""
        for _keys, values in self._scan_chunks(db, None, size):
            yield from values

    def _part_is_live(self: Store, part: dict[str, Any]) -> bool:
        with self.index.read() as txn:
            for _, value in txn.scan("parts"):
                if value["blob"]["id"] == part["blob"]["id"]:
                    return True
        return False

    def _walk_drive(self: Store, drive: Drive, run: _ScrubRun, pending: set[str], walked: Progress) -> tuple[int, int, list[str]]:
        """(temp files removed, unreferenced fragment files, errors) for one drive.

        The drive's fragment files come in blob id order and are joined
        with the sorted spill of referenced ids; each finished fan-out
        directory is checkpointed.
        """
        state = self.drive_state(drive)
        errors: list[str] = [] if state == "ok" else [f"{drive.drive_id}: {state}"]
        if not self.drive_readable(drive):
            return 0, 0, errors
        saved = run.drive_state(drive.drive_id)
        removed, unreferenced = saved.get("removed", 0), saved.get("unreferenced", 0)
        if saved.get("after") is None:
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
        after = saved.get("after") or ""
        referenced = SortedMembership(run.referenced)
        current = None
        for top, name, leaf in sorted_fragments(
            drive.path / BLOBS, after=after, onerror=lambda e: errors.append(f"{drive.drive_id}: {e}")
        ):
            if top != current:
                if current is not None:
                    run.drive_walked(drive.drive_id, current, removed, unreferenced)
                    walked.advance()
                current = top
            if name.endswith(".meta"):
                continue
            blob_id, sep, _ = name.partition(".f")
            if not sep or blob_id in pending:
                continue
            # A file outside its fan-out directory is out of order: checked against the index alone.
            in_place = blob_id[:2] == top and blob_id[2:4] == leaf.name
            if not in_place or blob_id not in referenced:
                if not self._claimed_since(leaf / name):
                    unreferenced += 1
        if current is not None:
            run.drive_walked(drive.drive_id, current, removed, unreferenced)
            walked.advance()
        if not saved.get("volumes_done"):
            found, entries = self._walk_volumes(drive, run, pending, errors)
            unreferenced += found
            run.volumes_walked(drive.drive_id, removed, unreferenced, entries)
        return removed, unreferenced, errors

    def _walk_volumes(self: Store, drive: Drive, run: _ScrubRun, pending: set[str], errors: list[str]) -> tuple[int, list[list]]:
        """(unreferenced volume entries, entries of blobs named by dead writers' journals) on one drive.

        Entries come in volume order, not blob id order: they are spilled to
        sorted chunks (``blob id, index, volume, offset, length`` per line) and
        merge-joined with the referenced ids, so memory stays bounded.
        """
        spill_dir = run.dir / f"volumes-{drive.drive_id}"
        shutil.rmtree(spill_dir, ignore_errors=True)  # a killed walk's chunks would count twice
        listing = SortedSpill(spill_dir, chunk=VOLUME_SPILL_CHUNK)
        entries: list[list] = []
        for path in list_volumes(drive.path):
            try:
                for entry in scan(path):
                    where = [entry.blob_id, entry.index, path.name, entry.offset, entry.length]
                    if entry.blob_id in pending:
                        entries.append(where)  # collected by _collect_intents if the index never took it
                    else:
                        listing.add(" ".join(map(str, where)))
            except OSError as exc:
                errors.append(f"{drive.drive_id}: {path.name}: {exc.strerror}")
        unreferenced = 0
        referenced = SortedMembership(run.referenced)
        for line in listing:
            blob_id, _index, name, offset, length = line.split(" ")
            if blob_id not in referenced and not self._claimed_since(volume_dir(drive.path) / name, int(offset), int(length)):
                unreferenced += 1
        shutil.rmtree(spill_dir, ignore_errors=True)
        return unreferenced, entries

    def _claimed_since(self: Store, path: Path, base: int = 0, size: int | None = None) -> bool:
        """Whether a fragment (a file, or a volume entry at ``base``) the index scan did not know is being written, or was committed since."""
        footer = read_footer(path, base, size)
        if footer is None:
            # Collected since it was listed (unlinked, or punched to zeros): nothing left to report.
            # A torn one (its header still there) is a dead write's leftover: reported.
            return not _still_there(path, base, size)
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

    def _collect_intents(
        self: Store, referenced: SortedSpill, pending: dict[str, Any], settled: list[Any], entries: dict[str, list[tuple]]
    ) -> int:
        """Delete the fragments of blobs dead writers never committed; remove the journals so settled.

        ``entries``: the volume entries of those blobs the drive walk found,
        per blob id ``(volume path, fragment index, offset, length)``.
        """
        collected = 0
        journals = {journal.path: journal for journal in settled}
        known = SortedMembership(referenced)
        punched: set[Path] = set()
        for blob_id in sorted(pending):
            found = entries.get(blob_id, [])
            if blob_id not in known and not self._referenced_now(blob_id, found):
                punched |= self._delete_uncommitted(blob_id, found)
                collected += 1
        active = self.volumes.active_paths()
        for path in sorted(punched - active):
            try:
                unlink_if_dead(path, self.config.gc_min_age)
            except OSError:
                pass
        for journal in self.intents.dead_journals():
            if journal.path in journals or not (journal.uncommitted or journal.unsettled_meta):
                try:
                    journal.path.unlink()
                except OSError:
                    pass
        return collected

    def _referenced_now(self: Store, blob_id: str, entries: list[tuple]) -> bool:
        """Whether the index references ``blob_id`` now, by the owner its own footers name.

        A last look before a dead writer's blob is deleted, in case the index
        changed since the referenced ids were spilled: every fragment file or
        volume entry of the blob is asked, as :meth:`_claimed_since` asks for
        an unreferenced one. (It does not close the race the attacker test
        finds: there the index names the blob only after the scrub; see
        docs/operations.md, "Known issue".)
        """
        places: list[tuple[Path, int, int | None]] = [(path, offset, length) for path, _i, offset, length in entries]
        places += [(path, 0, None) for path in self._fragment_paths(blob_id) if path.exists()]
        return any(self._claimed_since(path, base, size) for path, base, size in places)

    def _fragment_paths(self: Store, blob_id: str) -> list[Path]:
        """Where a fragment file of ``blob_id`` (of any tier) would lie on every readable drive."""
        width = max(t.k + t.m for t in self.config.tiers)
        return [
            drive.fragment_path(blob_id, i) for drive in self.all_drives() if self.drive_readable(drive) for i in range(width)
        ]

    def _delete_uncommitted(self: Store, blob_id: str, entries: list[tuple]) -> set[Path]:
        """Unlink the fragment files and punch the volume entries of a blob never committed; the volumes punched."""
        for path in self._fragment_paths(blob_id):
            try:
                os.unlink(path)
            except OSError:
                pass
        punched = set()
        for path, index, offset, length in entries:
            try:
                if punch_entry(path, blob_id, index, offset, length):
                    punched.add(path)
            except OSError as exc:  # an immutable volume keeps it (reported as unreferenced by the next scrub)
                log.info("scrub: entry of uncommitted blob %s in %s kept: %s", blob_id, path, exc)
        return punched


class _ScrubRun:
    """A scrub's state on disk (``run/scrub``): the spilled referenced ids and the checkpoint.

    One scrub at a time holds it (a lock file). A checkpoint left by a
    killed scrub is continued when it was made against the same index with
    the same verdict on it; otherwise it is discarded.
    """

    def __init__(self, store: Store, report: ScrubReport, checkpoint_seconds: float) -> None:
        self.dir = store.run_dir / "scrub"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.dir.parent / "scrub.lock", "a")
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)  # another scrub of this store runs: wait for it
        self.path = self.dir / "checkpoint.json"
        self.report = report
        self._store = store
        index_id = store.index.state()["index_id"]
        state = _load_json(self.path)
        self._fresh = {"index_id": index_id, "trusted": report.index_trusted, "dbs": {}, "drives": {}, "verified": 0}
        if state is None or state.get("index_id") != index_id or state.get("trusted") != report.index_trusted:
            self._wipe()
            state = dict(self._fresh)
        else:
            log.info("scrub: continuing the scrub that stopped at %s", {db: v.get("after") for db, v in state["dbs"].items()})
            for name in _RESUMED_FIELDS:
                setattr(report, name, state.get("report", {}).get(name, getattr(report, name)))
        self.state = state
        self.saved_journals: set[str] | None = set(state["journals"]) if "journals" in state else None
        self.referenced = SortedSpill(self.dir / "referenced")
        self._mutex = threading.Lock()
        self._saved_at = time.monotonic()
        self._every = checkpoint_seconds

    def _wipe(self) -> None:
        for stale in self.dir.iterdir():
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink()

    def start_over(self) -> None:
        """Forget the checkpoint: the pass begins again from nothing."""
        self._wipe()
        self.state = json.loads(json.dumps(self._fresh))
        self.saved_journals = None
        for name in _RESUMED_FIELDS:
            setattr(self.report, name, [] if name == "lost" else 0)
        self.referenced = SortedSpill(self.dir / "referenced")

    def save_journals(self, paths: list[str]) -> None:
        self.state["journals"] = paths
        self._save()

    def db_done(self, db: str) -> bool:
        return bool(self.state["dbs"].get(db, {}).get("done"))

    def resume_key(self, db: str) -> bytes | None:
        after = self.state["dbs"].get(db, {}).get("after")
        return bytes.fromhex(after) if after else None

    def advance(self, db: str, key: bytes, count: int) -> None:
        """Records of ``db`` up to ``key`` are verified and their ids spilled; checkpoint now and then."""
        self.state["dbs"].setdefault(db, {})["after"] = key.hex()
        self.state["verified"] += count
        if time.monotonic() - self._saved_at >= self._every:
            self.referenced.flush()
            self._save()

    def db_finished(self, db: str) -> None:
        self.state["dbs"].setdefault(db, {})["done"] = True
        self.referenced.flush()
        self._save()

    def drive_state(self, drive_id: str) -> dict[str, Any]:
        return dict(self.state["drives"].get(drive_id, {}))

    def drive_walked(self, drive_id: str, top: str, removed: int, unreferenced: int) -> None:
        with self._mutex:
            self.state["drives"].setdefault(drive_id, {}).update(after=top, removed=removed, unreferenced=unreferenced)
            self._save()

    def volumes_walked(self, drive_id: str, removed: int, unreferenced: int, entries: list[list]) -> None:
        """A drive's volumes are walked: its count, and the entries of dead writers' blobs (bounded by their journals)."""
        with self._mutex:
            saved = self.state["drives"].setdefault(drive_id, {})
            saved.update(removed=removed, unreferenced=unreferenced, volumes_done=True, entries=entries)
            self._save()

    def pending_entries(self) -> dict[str, list[tuple]]:
        """Per blob id, the volume entries of dead writers' blobs found on every drive walked."""
        out: dict[str, list[tuple]] = {}
        for drive_id, saved in self.state["drives"].items():
            drive = self._store.drive_by_id(drive_id)
            if drive is None:
                continue
            for blob_id, index, name, offset, length in saved.get("entries", []):
                out.setdefault(blob_id, []).append((volume_dir(drive.path) / name, index, offset, length))
        return out

    def walked_dirs(self) -> int:
        done = 0
        for entry in self.state["drives"].values():
            try:
                done += int(entry.get("after") or "-1", 16) + 1
            except ValueError:
                pass
        return done

    def _save(self) -> None:
        self.state["report"] = {name: getattr(self.report, name) for name in _RESUMED_FIELDS}
        tmp = self.dir / "checkpoint.json.tmp"
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.path)
        self._saved_at = time.monotonic()

    def finish(self) -> None:
        """The scrub is complete: its state goes."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def close(self) -> None:
        self._lock_file.close()


def _still_there(path: Path, base: int, size: int | None) -> bool:
    """Whether a listed fragment file (``size`` None) or volume entry (a valid header before ``base``) still exists."""
    if size is None:
        return path.exists()
    try:
        return entry_at(path, base) is not None
    except FileNotFoundError:
        return False  # the whole volume was removed (every entry collected)


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _read_seen(drive: Drive) -> dict[str, Any] | None:
    try:
        return json.loads((drive.path / INDEX_SEEN).read_text())
    except (OSError, ValueError):
        return None


def _holds_data(drive: Drive) -> bool:
    for sub in (BUCKETS, BLOBS, VOLUMES):
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
