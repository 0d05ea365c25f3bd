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

from objfs.store import Principal, Store
from objfs.store.errors import BucketAlreadyExists, InvalidKey, NoSuchKey, StoreError

from .tags import complete_file_check, looks_like_dicom

CHUNK = 1 << 20


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


class Progress:
    """Files, bytes, rate and ETA on stderr: a redrawn bar on a TTY, plain lines otherwise."""

    def __init__(self, total_files: int, total_bytes: int, out: TextIO = sys.stderr, interval: float | None = None) -> None:
        self.total_files, self.total_bytes = total_files, total_bytes
        self.files = self.bytes = 0
        self.out = out
        self.tty = out.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.start = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def add(self, files: int, nbytes: int) -> None:
        with self._lock:
            self.files += files
            self.bytes += nbytes
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self._draw(now)

    def _draw(self, now: float, final: bool = False) -> None:
        elapsed = max(now - self.start, 1e-6)
        rate = self.bytes / elapsed
        left = self.total_bytes - self.bytes
        eta = left / rate if rate > 0 else 0.0
        frac = self.bytes / self.total_bytes if self.total_bytes else 1.0
        text = (
            f"{self.files}/{self.total_files} files  {self.bytes / 1e6:.1f}/{self.total_bytes / 1e6:.1f} MB  "
            f"{rate / 1e6:.1f} MB/s  {self.files / elapsed:.1f} files/s  ETA {eta:.0f}s"
        )
        if self.tty:
            width = 24
            bar = "#" * int(frac * width)
            self.out.write(f"\r[{bar:<{width}}] {text}" + ("\n" if final else ""))
        else:
            self.out.write(f"migrate: {text}\n")
        self.out.flush()

    def finish(self) -> None:
        with self._lock:
            self._draw(time.monotonic(), final=True)


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
    progress_out: TextIO | None = sys.stderr,
) -> dict[str, Any]:
    """Copy ``source`` into ``bucket`` (created if needed); returns the JSON report.

    Safe to run again at any time: see the module docstring.
    """
    src = Path(source).resolve()
    if not src.is_dir():
        raise NotADirectoryError(f"{src} is not a directory")
    try:
        store.create_bucket(bucket)
    except BucketAlreadyExists:
        pass
    report = Report(str(src), bucket)
    journal = Journal(journal_path(store, src, bucket))
    try:
        files = list(_walk(src, report))
        report.files_seen = len(files)
        todo = []
        for rel, st in files:
            done = journal.entries.get(rel)
            if done and done["size"] == st.st_size and done["mtime_ns"] == st.st_mtime_ns and done["status"] == "copied":
                report.unchanged += 1
            else:
                todo.append((rel, st))
        progress = Progress(len(todo), sum(st.st_size for _, st in todo), progress_out) if progress_out else None
        principal = Principal("migrate")
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="objfs-migrate") as pool:
            for _ in pool.map(
                lambda item: _copy_one(store, src, bucket, item[0], item[1], journal, report, progress, principal), todo
            ):
                pass
        if progress:
            progress.finish()
        if verify:
            with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="objfs-verify") as pool:
                list(pool.map(lambda item: _verify_one(store, src, bucket, item[0], journal, report), files))
    finally:
        journal.close()
    return report.as_dict()


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
            store.put_object(
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
        progress.add(1, st.st_size)


def _verify_one(store: Store, src: Path, bucket: str, rel: str, journal: Journal, report: Report) -> None:
    entry = journal.entries.get(rel)
    if entry is None or entry.get("status") != "copied":
        return  # skipped files are reported already
    try:
        source_sha = hashlib.sha256()
        with open(src / rel, "rb") as fp:
            while chunk := fp.read(CHUNK):
                source_sha.update(chunk)
        stored_sha = hashlib.sha256()
        with store.open_object(bucket, rel) as reader:
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
