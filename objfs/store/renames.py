"""Renames and attribute changes: metadata only, no data moves.

A rename first records the new name beside the fragments (so
``rebuild-index`` finds it), then moves the record in one transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .audit import audited, guarded
from .crypto import seal_record
from .drives import rendezvous_order
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
        """Move every key under ``src_prefix`` to ``dst_prefix`` in one transaction (a directory rename)."""
        if not src_prefix.endswith("/") or not dst_prefix.endswith("/"):
            raise InvalidArgument("directory prefixes end with '/'")
        with self.index.read() as txn:
            self._bucket(txn, bucket)
            keys = [rec["key"] for _, rec in txn.scan_objects(bucket, src_prefix)]
        pairs = [(k, dst_prefix + k[len(src_prefix) :]) for k in keys]
        if pairs:
            self.rename_many(bucket, pairs, no_replace=False, principal=principal)
        return len(pairs)

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

            def commit(txn: Txn, record=record, new=new) -> bool:
                now_rec = self._find(txn, bucket, key, record["version"])
                if now_rec["id"] != record["id"] or now_rec.get("gen") != record.get("gen"):
                    return False
                self._store_record(txn, new)
                return True

            try:
                with self._meta_change([{"id": record["id"], "bucket": bucket, "key": key, "gen": new["gen"]}]):
                    # The drives learn the attributes before the index does, so rebuild-index keeps them.
                    self._write_meta_files(new)
                    if not self.index.commit(commit):
                        raise _SourceChanged()  # the drives' copy is undone on the way out
            except _SourceChanged:
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
        if parts:
            drives = [self.drive_by_id(x) for x in parts[0]["drives"]]
            return [d for d in drives if d is not None and self.drive_healthy(d)]
        # Records without data (delete markers) go where their id ranks highest.
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


class _SourceChanged(Exception):
    """A concurrent change raced a rename; it is retried."""
