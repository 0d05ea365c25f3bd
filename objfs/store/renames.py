"""Renames and attribute changes: metadata only, no data moves.

A rename first records the new name beside the fragments (so
``rebuild-index`` finds it), then moves the record in one transaction.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .audit import audited, guarded
from .crypto import _is_encrypted as is_encrypted
from .crypto import seal_record
from .drives import fsync_dir, rendezvous_order
from .errors import DataLoss, InvalidArgument, KeyExists, NoSuchKey, ObjectLocked, PreconditionFailed
from .fragments import read_meta, write_meta
from .index import Txn, object_key, version_key
from .locks import check_lock, in_commit_grace, lock_active
from .names import check_key
from .objects import ObjectInfo
from .policy import check_acl, check_public_acl_allowed

if TYPE_CHECKING:
    from .engine import Principal, Store

log = logging.getLogger(__name__)


class RenamesMixin:
    """Rename and attribute operations of :class:`objfs.store.Store`."""

    @audited("rename", target=lambda a, k, r: {"bucket": a[0], "key": a[2], "source": a[1]})
    def rename_object(
        self: Store, bucket: str, src_key: str, dst_key: str, *, no_replace: bool = False, principal: Principal | None = None
    ) -> ObjectInfo:
        """Move the current version of ``src_key`` to ``dst_key``: metadata only, atomic.

        Raises NoSuchKey, KeyExists (with ``no_replace``), ObjectLocked.
        """
        return self.rename_many(bucket, [(src_key, dst_key)], no_replace=no_replace, principal=principal)[0]

    @audited("rename", target=lambda a, k, r: {"bucket": a[0], "key": a[2], "source": a[1]})
    def rename_prefix(self: Store, bucket: str, src_prefix: str, dst_prefix: str, *, principal: Principal | None = None) -> int:
        """Move every key under ``src_prefix`` to ``dst_prefix`` in one transaction (a directory rename).

        One *rename record* (``renames/<gen>-<id>.rename`` on every drive)
        tells the drives, before the index commit, which object ids moved and
        from when on; ``rebuild-index`` applies it to every listed id whose
        own metadata is older. So the cost is one small file per drive plus
        one index transaction, whatever the number of files, and a crash
        leaves the old tree or the new one (see docs/design.md, "Directory
        renames"). Encrypted objects keep their names off the drives, so a
        directory holding any moves object by object (still one transaction).
        Returns how many keys moved.
        """
        if not src_prefix.endswith("/") or not dst_prefix.endswith("/"):
            raise InvalidArgument("directory prefixes end with '/'")
        check_key(src_prefix)
        check_key(dst_prefix)
        if dst_prefix.startswith(src_prefix):
            raise InvalidArgument("a directory cannot move into itself")
        grow = len(dst_prefix.encode()) - len(src_prefix.encode())
        for _attempt in range(5):
            rename_id, stamp = uuid.uuid4().hex, time.time_ns()
            try:
                with self._meta_change([{"id": rename_id, "bucket": bucket, "gen": stamp, "rename": True}]):
                    moved, garbage = self._commit_prefix_rename(bucket, src_prefix, dst_prefix, grow, rename_id, stamp, principal)
            except _SourceChanged:
                continue
            except _HoldsEncrypted as held:
                pairs = [(key, dst_prefix + key[len(src_prefix) :]) for key in held.keys]
                return len(self.rename_many(bucket, pairs, no_replace=False, principal=principal))
            self._retire_files(garbage)
            return moved
        raise PreconditionFailed("the directory changed during the rename; try again")

    def _commit_prefix_rename(
        self: Store, bucket: str, src_prefix: str, dst_prefix: str, grow: int, rename_id: str, stamp: int, principal
    ) -> tuple[int, list[dict[str, Any]]]:
        """The rename in one write transaction, the rename record written to the drives inside it.

        Holding the index's write lock while the record is fsynced (one small
        file per drive) makes the listing read, the record and the commit one
        atomic step against every other writer of any process, with a single
        pass over the directory.
        """
        garbage: list[dict[str, Any]] = []
        with self.index.write() as txn:
            settings = self._bucket(txn, bucket)
            sources = [rec for _, rec in txn.scan_objects(bucket, src_prefix) if not rec.get("delete_marker")]
            if not sources:
                return 0, []
            now = self.clock.now()
            for rec in sources:
                check_lock(rec, now, principal, False, grace=self.config.worm_commit_grace)
                if grow > 0:  # segments are unchanged below the prefix: only the length can break a key
                    check_key(dst_prefix + rec["key"][len(src_prefix) :])
            if any(is_encrypted(rec) for rec in sources):
                raise _HoldsEncrypted([rec["key"] for rec in sources])
            record = {
                "rename": rename_id,
                "bucket": bucket,
                "from": src_prefix,
                "to": dst_prefix,
                "gen": stamp,
                "ids": [rec["id"] for rec in sources],
            }
            self._write_rename_record(record)  # the drives learn the move before the index does
            # Every source leaves first: a destination key may be another source's old key.
            for rec in sources:
                txn.delete("objects", object_key(bucket, rec["key"]))
            cut = len(src_prefix)
            for rec in sources:
                new = dict(rec, key=dst_prefix + rec["key"][cut:], gen=stamp, seq=max(stamp, rec["seq"] + 1))
                dkey = object_key(bucket, new["key"])
                existing = txn.get("objects", dkey)
                if existing is not None:
                    if existing["seq"] >= new["seq"]:
                        raise _SourceChanged()  # the destination is newer than our stamp: stamp again
                    garbage += self._retire_current(txn, settings, existing, principal)
                txn.put("objects", dkey, new)
                for indexer in self.indexers:
                    indexer.on_change(txn, rec, new)
            # The evidence that this rename committed, for whoever settles it after a crash.
            txn.put("settings", _rename_evidence(rename_id), {"gen": stamp, "bucket": bucket})
        return len(sources), garbage

    def _rename_record_paths(self: Store, record: dict[str, Any]) -> list[Any]:
        name = f"{record['gen']}-{record['rename']}.rename"
        return [(d, d.path / RENAMES / name) for d in self.all_drives() if self.drive_healthy(d)]

    def _write_rename_record(self: Store, record: dict[str, Any]) -> None:
        """Durably write a directory rename's record on every healthy drive (all of them: it is small)."""
        targets = self._rename_record_paths(record)

        def write(target) -> bool:
            drive, path = target
            try:
                if not path.parent.is_dir():  # a healthy drive (marker checked) made before renames had records
                    path.parent.mkdir(exist_ok=True)
                    fsync_dir(drive.path)
                write_meta(path, drive.tmp_dir, record)
            except OSError as exc:
                log.warning("drive %s: rename record not written: %s", drive.drive_id, exc)
                return False
            return True

        written = sum(self.io_pool.map(write, targets))
        tier = self.config.hot
        if written < min(len(targets), tier.m + 1) or written == 0:
            raise DataLoss(f"could not record the rename of {record['bucket']}/{record['from']} on enough drives")

    def _settle_rename(self: Store, where: dict[str, Any]) -> None:
        """A rename whose process stopped between its record and its commit: keep the record only if it committed."""
        with self.index.read() as txn:
            committed = txn.get("settings", _rename_evidence(where["id"])) is not None
        if committed:
            return
        suffix = f"-{where['id']}.rename"
        for drive in self.all_drives():
            if not self.drive_readable(drive):
                continue
            for name in _listdir(drive.path / RENAMES):
                if name.endswith(suffix):
                    try:
                        os.unlink(drive.path / RENAMES / name)
                    except OSError as exc:
                        log.warning("drive %s: stale rename record %s not removed: %s", drive.drive_id, name, exc)

    def settle_dead_renames(self: Store) -> int:
        """Settle the directory renames of processes that died mid-rename (run when a store opens, and by scrub)."""
        settled = 0
        try:
            journals = self._dead_journals()
        except Exception as exc:  # noqa: BLE001 - opening a store must not fail on this; scrub retries
            log.warning("dead renames not settled yet: %s", exc)
            return 0
        for journal in journals:
            for where in journal.unsettled_meta:
                if where.get("rename"):
                    self._settle_rename(where)
                    settled += 1
        return settled

    def rename_many(
        self: Store, bucket: str, pairs: list[tuple[str, str]], *, no_replace: bool, principal: Principal | None
    ) -> list[ObjectInfo]:
        for src, dst in pairs:
            check_key(src)
            check_key(dst)
        for _attempt in range(5):
            with self.index.read() as txn:
                self._bucket(txn, bucket)
                sources = []
                for src, dst in pairs:
                    rec = txn.get("objects", object_key(bucket, src))
                    if rec is None or rec.get("delete_marker"):
                        raise NoSuchKey(f"{bucket}/{src} does not exist")
                    check_lock(rec, self.clock.now(), principal, False, grace=self.config.worm_commit_grace)
                    sources.append(rec)
            moved = []
            for rec, (src, dst) in zip(sources, pairs):
                # A fresh seq: the moved version is the newest at its new name (rebuild-index orders by it).
                stamp = time.time_ns()
                new = dict(rec, key=dst, gen=stamp, seq=max(stamp, rec["seq"] + 1))
                if rec.get("posix"):  # rename(2) changes the file's ctime (POSIX), as every inode change does
                    new["posix"] = dict(rec["posix"], ctime_ns=stamp)
                moved.append(new)
            wheres = [
                {"id": r["id"], "bucket": bucket, "key": src, "to": dst, "gen": new["gen"]}
                for r, new, (src, dst) in zip(sources, moved, pairs)
            ]
            garbage: list[dict[str, Any]] = []
            try:
                with self._meta_change(wheres):
                    # The drives learn the new names before the index does (rebuild-index).
                    list(self.io_pool.map(self._write_meta_files, moved))
                    garbage = self._commit_renames(bucket, sources, moved, pairs, no_replace, principal)
            except _SourceChanged:
                continue
            self._retire_files(garbage)
            return [ObjectInfo.from_record(r) for r in moved]
        raise PreconditionFailed("the source changed during the rename; try again")

    def _commit_renames(self: Store, bucket, sources, moved, pairs, no_replace, principal) -> list[dict[str, Any]]:
        garbage: list[dict[str, Any]] = []
        with self.index.write() as txn:
            settings = self._bucket(txn, bucket)
            for rec, (src, _dst) in zip(sources, pairs):
                now = txn.get("objects", object_key(bucket, src))
                if now is None or now["id"] != rec["id"] or now.get("gen") != rec.get("gen"):
                    raise _SourceChanged()
            for rec, new, (src, dst) in zip(sources, moved, pairs):
                if src == dst:
                    continue
                dkey = object_key(bucket, dst)
                existing = txn.get("objects", dkey)
                if existing is not None and not existing.get("delete_marker"):
                    if no_replace:
                        raise KeyExists(f"{bucket}/{dst} exists already")
                if existing is not None and existing["seq"] >= new["seq"]:
                    raise _SourceChanged()  # the destination is newer than our stamp: stamp again
                garbage += self._retire_current(txn, settings, existing, principal)
                txn.delete("objects", object_key(bucket, src))
                txn.put("objects", dkey, new)
                for indexer in self.indexers:
                    indexer.on_change(txn, rec, new)
        return garbage

    @audited("setattr")
    def update_object(
        self: Store,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        posix: dict[str, int] | None = None,
        metadata: dict[str, str] | None = None,
        xattrs: dict[str, bytes | None] | None = None,
        tags: dict[str, str] | None = None,
        acl: str | list[dict[str, str]] | None = None,
        principal: Principal | None = None,
    ) -> ObjectInfo:
        """Change attributes in the index only (no data moves): POSIX attributes
        (merged), user xattrs (a None value removes one), tags (replaced),
        metadata (replaced), the ACL (canned or grants, :mod:`.policy`). Durable when it returns.

        POSIX attributes of a WORM-locked version are frozen (as chattr +i
        freezes them); tags and extended attributes may still change, as S3
        allows for locked objects.
        """
        check_key(key)
        for _attempt in range(5):
            with self.index.read() as txn:
                self._bucket(txn, bucket)
                record = self._find(txn, bucket, key, version_id)
            if record.get("delete_marker"):
                raise NoSuchKey(f"{bucket}/{key} does not exist")
            now = self.clock.now()
            if posix and lock_active(record, now) and not in_commit_grace(record, now, self.config.worm_commit_grace):
                raise ObjectLocked(f"{bucket}/{key} is locked: its attributes cannot change")
            new = dict(record, gen=time.time_ns())
            if posix:
                new["posix"] = dict(record.get("posix") or {}, **posix)
            if metadata is not None:
                new["meta"] = dict(metadata)
            if tags is not None:
                new["tags"] = dict(tags)
            if acl is not None:
                acl = check_acl(acl)
                with self.index.read() as txn:
                    check_public_acl_allowed(self._bucket(txn, bucket), acl)
                new["acl"] = acl
            if xattrs:
                merged = dict(record.get("xattrs") or {})
                for name, value in xattrs.items():
                    if value is None:
                        merged.pop(name, None)
                    else:
                        merged[name] = value
                new["xattrs"] = merged

            if not self._replace_record(record, new, lambda txn, r=record: self._find(txn, bucket, key, r["version"])):
                continue
            return ObjectInfo.from_record(new)
        raise PreconditionFailed("the object changed during the update; try again")

    @guarded("read-acl")
    def object_acl(
        self: Store, bucket: str, key: str, *, version_id: str | None = None, principal: Principal | None = None
    ) -> ObjectInfo:
        """The version whose ACL is asked for (its record's ``acl`` and ``owner``): READ_ACP's, or its owners'."""
        return self.head_object(bucket, key, version_id)

    @audited("write-acl")
    def put_object_acl(
        self: Store,
        bucket: str,
        key: str,
        acl: str | list[dict[str, str]],
        *,
        version_id: str | None = None,
        principal: Principal | None = None,
    ) -> ObjectInfo:
        """Set a version's ACL (canned or grants, :mod:`.policy`): WRITE_ACP's, or its owners'; as :meth:`update_object`."""
        return self.update_object(bucket, key, version_id=version_id, acl=acl)

    def _replace_record(
        self: Store, record: dict[str, Any], new: dict[str, Any], find: Callable[[Txn], dict[str, Any] | None]
    ) -> bool:
        """Write ``new`` (same id, newer ``gen``) over ``record``: its ``.meta`` on the drives, then the index.

        The index commit happens only if ``find`` still returns ``record``
        unchanged (same id and gen); otherwise the drives' copy is undone and
        this returns False, for the caller to read again and retry. The
        drives learn the change before the index, so rebuild-index keeps it.
        """

        def commit(txn: Txn) -> bool:
            now = find(txn)
            if now is None or now["id"] != record["id"] or now.get("gen") != record.get("gen"):
                return False
            self._store_record(txn, new)
            return True

        try:
            with self._meta_change([{"id": record["id"], "bucket": new["bucket"], "key": new["key"], "gen": new["gen"]}]):
                self._write_meta_files(new)
                if not self.index.commit(commit):
                    raise _SourceChanged()  # the drives' copy is undone on the way out
        except _SourceChanged:
            return False
        return True

    def _store_record(self: Store, txn: Txn, record: dict[str, Any]) -> None:
        """Write back a changed record where it lives (current or noncurrent)."""
        okey = object_key(record["bucket"], record["key"])
        current = txn.get("objects", okey)
        vkey = version_key(record["bucket"], record["key"], record["seq"])
        if current is not None and current["id"] == record["id"]:
            old = current
            txn.put("objects", okey, record)
        else:
            old = txn.get("versions", vkey)
            txn.put("versions", vkey, record)
        if old is not None:
            self._records_changed(txn, old, record)

    # -- on-drive metadata ---------------------------------------------------------

    def _meta_drives(self: Store, record: dict[str, Any]):
        parts = record.get("parts") or []
        if parts and parts[0]["drives"]:
            drives = [self.drive_by_id(x) for x in parts[0]["drives"]]
            return [d for d in drives if d is not None and self.drive_healthy(d)]
        # Records without data (delete markers), and versions on a remote tier, go where their id ranks highest.
        tier = self.config.hot
        ranked = [d for d in rendezvous_order(record["id"], self.drives[tier.name]) if self.drive_healthy(d)]
        return ranked[: tier.m + 1]

    def _write_meta_files(self: Store, record: dict[str, Any]) -> None:
        """Durably record ``record`` beside its fragments, so the drives can rebuild the index."""
        drives = self._meta_drives(record)
        if not drives:
            return
        errors = 0
        on_drive = seal_record(self.encryption, record)  # an encrypted object's name and tags stay off the drives
        for drive in drives:
            try:
                write_meta(drive.meta_path(record["id"]), drive.tmp_dir, on_drive)
            except OSError:
                errors += 1
        if len(drives) - errors < 1:
            raise DataLoss(f"could not record metadata of {record['bucket']}/{record['key']} on any drive")

    def newest_meta(self: Store, object_id: str) -> dict[str, Any] | None:
        """The newest metadata (by ``gen``) any readable drive holds for ``object_id``, or None."""
        metas = [read_meta(d.meta_path(object_id)) for d in self.all_drives() if self.drive_readable(d)]
        metas = [m for m in metas if m]
        return max(metas, key=lambda m: m.get("gen", 0)) if metas else None

    @contextmanager
    def _meta_change(self: Store, wheres: list[dict[str, Any]]) -> Iterator[None]:
        """Around "write metadata to the drives, then commit": if the commit does not happen, undo.

        Each ``where`` is ``{"id", "bucket", "key", "to"?, "gen"}`` (see
        :meth:`IntentJournal.begin_meta`). A failed commit rewrites the drives'
        metadata from the index at once; a process killed in between leaves
        the intent for scrub, which does the same (:meth:`reconcile_metas`).
        """
        tokens = [self.intents.begin_meta(w) for w in wheres]
        try:
            yield
        except BaseException:
            try:
                self.reconcile_metas(wheres)
            except Exception as exc:  # noqa: BLE001 - the original error is the one to raise
                log.warning("metadata on the drives may be ahead of the index until the next scrub: %s", exc)
            raise
        finally:
            for token in tokens:
                self.intents.end_meta(token)

    def reconcile_metas(self: Store, wheres: list[dict[str, Any]]) -> int:
        """Make the drives' metadata of each id say what the index says; returns how many were rewritten.

        An id whose metadata on the drives is newer than the change named
        (someone changed it later) is left alone.
        """
        fixed = 0
        for where in wheres:
            if where.get("rename"):
                self._settle_rename(where)
                fixed += 1
                continue
            object_id = where["id"]
            newest = self.newest_meta(object_id)
            if newest is not None and newest.get("gen", 0) > where.get("gen", 0):
                continue
            record = None
            for key in filter(None, (where.get("key"), where.get("to"))):
                record = record or self._record_by_id(where["bucket"], key, object_id)
            stamp = time.time_ns()
            if record is not None:
                self._write_meta_files(dict(record, gen=stamp))
            else:
                with self.index.read() as txn:
                    upload = txn.get("uploads", object_id.encode())
                if upload is not None:
                    meta = {"id": object_id, "bucket": upload["bucket"], "key": upload["key"], "upload": upload, "gen": stamp}
                    self._write_meta_files(meta)
                else:  # the index has nothing under that id: what the drives say of it never happened
                    self._write_tombstone(
                        {"id": object_id, "bucket": where["bucket"], "key": where.get("key"), "version": "", "seq": 0}
                    )
            fixed += 1
        return fixed


#: The directory of each drive that holds directory-rename records (read by rebuild-index).
RENAMES = "renames"


def _rename_evidence(rename_id: str) -> bytes:
    return b"rename/" + rename_id.encode()


def _listdir(path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


class _HoldsEncrypted(Exception):
    """The directory holds encrypted objects, whose names stay off the drives: move them one by one."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__()
        self.keys = keys


class _SourceChanged(Exception):
    """A concurrent change raced a rename; it is retried."""
