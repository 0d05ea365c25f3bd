"""``objfs migrate``: copy a legacy share into a bucket, resumably and incrementally.

Guarantees
----------
* The source is only read (files opened ``O_RDONLY``, never renamed,
  touched or locked); relative paths become keys unchanged, so a PACS
  whose database stores paths finds every file under the mount.
* Every copied file is a normal ``put_object``: DICOM bodies are tag-indexed
  in the same transaction (C-FIND finds them), durable when recorded.
* A journal in the store (``STORE/migrate/<source hash>.jsonl``, one JSON
  line per finished file, fsynced per batch) records ``(path, size,
  mtime_ns, sha256, status)``. A re-run, after a crash (even SIGKILL) or
  while the share is still written to, copies only files that are new or
  whose size or mtime changed; a file changed *during* its copy is
  detected (stat before and after) and retried on the next run.
* Journal lines are written only after the object's commit, so a crash
  can only cause a file to be copied again, never to be skipped.
* Files that cannot be read, and files that look like DICOM but are
  truncated or malformed (:func:`~objfs.dicom.tags.complete_file_check`),
  are *not* copied and are listed with their reason. Non-DICOM files are
  part of the share (reports, thumbnails, PACS index files) and are copied
  as plain objects, counted apart.
* ``verify`` re-reads every object recorded for this source and compares
  its sha256 with the source file's.

Files deleted from the share
----------------------------
A file the journal records as copied that is no longer in the share is
never deleted from the archive by default: a PACS share losing files is
more often an accident (a failed mount, a misconfigured purge, ransomware)
than intent, and the archive is the copy that must survive it. Every run
lists such files in ``missing_from_source`` (with the state of their object)
and counts them, until they come back or are mirrored.

``mirror_deletes=True`` (``--mirror-deletes``) deletes the objects of those
files, and only objects this migration wrote: the key's current object must
be the very one recorded in the journal (same object id), so a file since
rewritten through the mount or S3 is never touched. In a versioned bucket
the delete adds a delete marker (the data stays as an older version). It
refuses, and reports, objects under WORM retention or legal hold; refuses
every delete when the share has no files at all (an unmounted share looks
exactly like that) or when more than ``max_deletes`` would go. Paths below
a directory that could not be read are not considered missing. The only
window left is an overwrite landing between the identity check and the
delete (the engine has no conditional delete); it is milliseconds wide.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat as statmod
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from objfs.store import ObjectInfo, Principal, Store
from objfs.store.errors import BucketAlreadyExists, InvalidKey, NoSuchKey, ObjectLocked, StoreError
from objfs.store.progress import Progress

from .tags import complete_file_check, looks_like_dicom

CHUNK = 1 << 20
#: Who the migration's writes, deletes and verifying reads are audited as.
MIGRATION = Principal("system:migrate")


class _HashingReader:
    """A file reader that hashes what it hands out (one pass: copy and sha256)."""

    def __init__(self, fp: Any) -> None:
        self.fp = fp
        self.sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.fp.read(size)
        self.sha.update(data)
        return data


@dataclass
class Report:
    """What a run did; ``as_dict`` is the JSON report."""

    source: str
    bucket: str
    started: float = field(default_factory=time.time)
    files_seen: int = 0
    copied: int = 0
    copied_bytes: int = 0
    dicom: int = 0
    non_dicom: int = 0
    unchanged: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    verified: int = 0
    verify_failed: list[dict[str, str]] = field(default_factory=list)
    missing_from_source: list[dict[str, Any]] = field(default_factory=list)
    mirror_deletes: bool = False
    mirror_refused: str | None = None
    deleted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def skip(self, rel: str, reason: str) -> None:
        with self.lock:
            self.skipped.append({"path": rel, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "bucket": self.bucket,
            "seconds": round(time.time() - self.started, 3),
            "files_seen": self.files_seen,
            "copied": self.copied,
            "copied_bytes": self.copied_bytes,
            "dicom": self.dicom,
            "non_dicom": self.non_dicom,
            "unchanged": self.unchanged,
            "skipped_count": len(self.skipped),
            "skipped": sorted(self.skipped, key=lambda s: s["path"]),
            "verified": self.verified,
            "verify_failed": self.verify_failed,
            "missing_from_source_count": len(self.missing_from_source),
            "missing_from_source": sorted(self.missing_from_source, key=lambda m: m["path"]),
            "mirror_deletes": self.mirror_deletes,
            "mirror_refused": self.mirror_refused,
            "deleted": self.deleted,
            # Every file of the share is archived (and verified if asked);
            # says nothing about files gone from the share (listed above).
            "complete": not self.skipped and not self.verify_failed,
        }


class Journal:
    """Append-only JSON lines; the last line for a path wins. Tolerates a torn last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with open(path, "rb") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # torn by a crash mid-write: that file is simply copied again
                    self.entries[entry["path"]] = entry
        self._fp = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.entries[entry["path"]] = entry
            self._fp.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self._unsynced += 1
            # The objects are durable already; syncing in batches only bounds
            # how much a crash makes us copy again.
            if self._unsynced >= 64 or time.monotonic() - self._last_sync > 1.0:
                self._sync()

    def _sync(self) -> None:
        self._fp.flush()
        os.fsync(self._fp.fileno())
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self._sync()
            self._fp.close()


def journal_path(store: Store, source: Path, bucket: str) -> Path:
    digest = hashlib.sha256(f"{source}\0{bucket}".encode()).hexdigest()[:16]
    return store.root / "migrate" / f"{digest}.jsonl"


def _walk(source: Path, report: Report) -> Iterator[tuple[str, os.stat_result]]:
    """Regular files under ``source`` (symlinks not followed), with relative POSIX paths."""
    stack = [source]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            report.skip(os.path.relpath(directory, source), f"unreadable directory: {exc.strerror or exc}")
            continue
        for entry in entries:
            rel = os.path.relpath(entry.path, source).replace(os.sep, "/")
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                report.skip(rel, f"cannot stat: {exc.strerror or exc}")
                continue
            if statmod.S_ISDIR(st.st_mode):
                stack.append(Path(entry.path))
            elif statmod.S_ISREG(st.st_mode):
                yield rel, st
            else:
                report.skip(rel, "not a regular file (symlink, device or socket)")


def migrate(
    store: Store,
    source: str | os.PathLike[str],
    bucket: str,
    *,
    workers: int = 4,
    verify: bool = False,
    mirror_deletes: bool = False,
    max_deletes: int | None = None,
    progress_out: TextIO | None = sys.stderr,
) -> dict[str, Any]:
    """Copy ``source`` into ``bucket`` (created if needed); returns the JSON report.

    Safe to run again at any time: see the module docstring, which also
    says what ``mirror_deletes`` and ``max_deletes`` do with files gone
    from the share (by default: nothing but report them).
    """
    src = Path(source).resolve()
    if not src.is_dir():
        raise NotADirectoryError(f"{src} is not a directory")
    try:
        store.create_bucket(bucket, principal=MIGRATION)
    except BucketAlreadyExists:
        pass
    report = Report(str(src), bucket, mirror_deletes=mirror_deletes)
    journal = Journal(journal_path(store, src, bucket))
    try:
        files = list(_walk(src, report))
        report.files_seen = len(files)
        # Before any copy adds its own skips: these are the paths the walk
        # could not see into, whose journalled files are not known missing.
        unseen = {s["path"] for s in report.skipped}
        todo = []
        for rel, st in files:
            done = journal.entries.get(rel)
            if done and done["size"] == st.st_size and done["mtime_ns"] == st.st_mtime_ns and done["status"] == "copied":
                report.unchanged += 1
            else:
                todo.append((rel, st))
        progress = _files_progress(progress_out, "migrate", todo)
        principal = MIGRATION
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="objfs-migrate") as pool:
            for _ in pool.map(
                lambda item: _copy_one(store, src, bucket, item[0], item[1], journal, report, progress, principal), todo
            ):
                pass
        if progress:
            progress.close()
        if verify:
            checking = _files_progress(progress_out, "migrate --verify", files)
            with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="objfs-verify") as pool:
                list(pool.map(lambda item: _verify_one(store, src, bucket, item, journal, report, checking), files))
            if checking:
                checking.close()
        gone = _missing_entries(journal, {rel for rel, _ in files}, unseen)
        if gone:
            _settle_missing(store, bucket, gone, journal, report, mirror_deletes, max_deletes, principal)
    finally:
        journal.close()
    if report.missing_from_source and progress_out:
        kept = sum(1 for m in report.missing_from_source if m["archive"] in ("kept", "locked"))
        progress_out.write(
            f"migrate: {len(report.missing_from_source)} archived files are gone from the share; "
            f"{kept} still archived, {report.deleted} deleted (see missing_from_source)\n"
        )
    return report.as_dict()


def _missing_entries(journal: Journal, present: set[str], unseen: set[str]) -> list[dict[str, Any]]:
    """Journal entries of copied files that the walk did not find, sorted by path.

    A path is not missing when it, or a directory above it, is in ``unseen``
    (could not be listed or stat'ed, or is no longer a regular file): the
    file may well still be there.
    """
    if "." in unseen:
        return []

    def hidden(rel: str) -> bool:
        parts = rel.split("/")
        return any("/".join(parts[:i]) in unseen for i in range(1, len(parts) + 1))

    return sorted(
        (e for rel, e in journal.entries.items() if e.get("status") == "copied" and rel not in present and not hidden(rel)),
        key=lambda e: e["path"],
    )


def _is_ours(info: ObjectInfo, entry: dict[str, Any]) -> bool:
    """Whether ``info`` is the very object the migration wrote for ``entry``.

    Entries journalled before object ids were recorded fall back to the
    size and the mtime the migration copied from the file (a rewrite through
    the mount or S3 sets its own).
    """
    if "object_id" in entry:
        return info.object_id == entry["object_id"]
    return info.size == entry["size"] and info.posix.get("mtime_ns") == entry["mtime_ns"]


def _settle_missing(
    store: Store,
    bucket: str,
    gone: list[dict[str, Any]],
    journal: Journal,
    report: Report,
    mirror: bool,
    max_deletes: int | None,
    principal: Principal,
) -> None:
    """Report each missing file with its object's state; with ``mirror``, delete ours.

    States: ``kept`` (our object is still archived), ``deleted``, ``locked``
    (the engine refused the delete under WORM: tried again on the next
    mirrored run), ``replaced`` (the key now holds an object someone else
    wrote: never touched), ``absent`` (nothing under the key). With
    ``mirror``, deleted, replaced and absent files are journalled as settled
    and not reported again; without it the journal is not changed, so every
    run reports them. ``max_deletes`` counts every object of ours that the
    mirror would try to delete, locked ones included.
    """
    found: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for entry in gone:
        item: dict[str, Any] = {k: entry[k] for k in ("path", "size", "mtime_ns", "sha256")}
        try:
            info: ObjectInfo | None = store.head_object(bucket, entry["path"])
        except NoSuchKey:
            info = None
        if info is None:
            item["archive"] = "absent"
        elif not _is_ours(info, entry):
            item["archive"] = "replaced"
        else:
            item["archive"] = "kept"
        found.append((entry, item))
    report.missing_from_source = [item for _, item in found]
    if not mirror:
        return
    doomed = [item for _, item in found if item["archive"] == "kept"]
    if report.files_seen == 0:
        # An unmounted share is an empty directory: mirroring it would empty the archive.
        report.mirror_refused = "the share has no files at all (not mounted?); nothing deleted"
        return
    if max_deletes is not None and len(doomed) > max_deletes:
        report.mirror_refused = f"{len(doomed)} objects would be deleted, more than max_deletes={max_deletes}; nothing deleted"
        return
    for entry, item in found:
        if item["archive"] == "kept":
            try:
                # Checked again just before the delete, so the window for a
                # concurrent overwrite or a new lock stays milliseconds wide.
                info = store.head_object(bucket, entry["path"])
                if not _is_ours(info, entry):
                    item["archive"] = "replaced"
                else:
                    # In a versioned bucket the engine would add a delete
                    # marker over a locked version; the mirror must not hide
                    # it, so it asks the engine's WORM rule first (a refusal
                    # is audited as this principal's).
                    store.check_change(info, "delete", principal=principal)
                    store.delete_object(bucket, entry["path"], principal=principal)
                    item["archive"] = "deleted"
                    report.deleted += 1
            except NoSuchKey:
                item["archive"] = "absent"
            except ObjectLocked as exc:
                item["archive"], item["reason"] = "locked", str(exc)
                continue  # still ours, still archived: reported, retried next time
            except StoreError as exc:
                item["reason"] = f"delete failed: {type(exc).__name__}: {exc}"
                continue  # still archived; tried again next time
        # Settled: the migration no longer owns this key.
        journal.record({**entry, "status": "deleted" if item["archive"] == "deleted" else "released"})


def _copy_one(
    store: Store, src: Path, bucket: str, rel: str, st: os.stat_result, journal: Journal, report: Report, progress, principal
) -> None:
    path = src / rel
    try:
        with open(path, "rb") as fp:
            head = fp.read(132 + 4096)
            dicom = looks_like_dicom(head)
            if dicom:
                problem = complete_file_check(fp)
                if problem is not None:
                    report.skip(rel, f"DICOM file is damaged: {problem}")
                    return
            fp.seek(0)
            reader = _HashingReader(fp)
            info = store.put_object(
                bucket,
                rel,
                reader,
                length=st.st_size,
                content_type="application/dicom" if dicom else None,
                posix={
                    "mode": statmod.S_IFREG | (st.st_mode & 0o7777),
                    "uid": st.st_uid,
                    "gid": st.st_gid,
                    "mtime_ns": st.st_mtime_ns,
                },
                principal=principal,
            )
            after = os.fstat(fp.fileno())
    except OSError as exc:
        report.skip(rel, f"unreadable: {exc.strerror or exc}")
        return
    except InvalidKey as exc:
        report.skip(rel, f"path is not a valid key: {exc}")
        return
    except StoreError as exc:  # includes a file that shrank while being read
        report.skip(rel, f"store refused it: {type(exc).__name__}: {exc}")
        return
    if after.st_size != st.st_size or after.st_mtime_ns != st.st_mtime_ns:
        report.skip(rel, "changed while being copied; copied again on the next run")
        return
    journal.record(
        {
            "path": rel,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": reader.sha.hexdigest(),
            "status": "copied",
            "dicom": dicom,
            # Identifies the object this run wrote, so --mirror-deletes can
            # tell it from one written later under the same key.
            "object_id": info.object_id,
        }
    )
    with report.lock:
        report.copied += 1
        report.copied_bytes += st.st_size
        if dicom:
            report.dicom += 1
        else:
            report.non_dicom += 1
    if progress:
        progress.advance(1, nbytes=st.st_size)


def _verify_one(
    store: Store,
    src: Path,
    bucket: str,
    item: tuple[str, os.stat_result],
    journal: Journal,
    report: Report,
    progress: Progress | None,
) -> None:
    try:
        _verify_file(store, src, bucket, item[0], journal, report)
    finally:
        if progress:
            progress.advance(1, nbytes=item[1].st_size)


def _verify_file(store: Store, src: Path, bucket: str, rel: str, journal: Journal, report: Report) -> None:
    entry = journal.entries.get(rel)
    if entry is None or entry.get("status") != "copied":
        return  # skipped files are reported already
    try:
        source_sha = hashlib.sha256()
        with open(src / rel, "rb") as fp:
            while chunk := fp.read(CHUNK):
                source_sha.update(chunk)
        stored_sha = hashlib.sha256()
        with store.open_object(bucket, rel, principal=MIGRATION) as reader:
            for chunk in reader.iter_range():
                stored_sha.update(chunk)
    except (OSError, NoSuchKey, StoreError) as exc:
        with report.lock:
            report.verify_failed.append({"path": rel, "reason": f"{type(exc).__name__}: {exc}"})
        return
    if source_sha.hexdigest() != stored_sha.hexdigest():
        reason = "source changed since the copy" if source_sha.hexdigest() != entry["sha256"] else "stored object differs"
        with report.lock:
            report.verify_failed.append({"path": rel, "reason": reason})
        return
    with report.lock:
        report.verified += 1


def _files_progress(stream: TextIO | None, label: str, files: list[tuple[str, os.stat_result]]) -> Progress | None:
    """Progress over ``files`` (files and bytes) on ``stream``, a plain line every 5 s off a terminal; None: silent."""
    if not stream:
        return None
    return Progress(
        len(files),
        label,
        unit="files",
        total_bytes=sum(st.st_size for _, st in files),
        enabled=True,
        stream=stream,
        interval=None if stream.isatty() else 5.0,
    )
