"""The pyfuse3 filesystem: FUSE requests translated into engine calls.

Translation only: the namespace rules live in :mod:`.namespace`, pending
writes in :mod:`.spool`, inode numbers in :mod:`.inodes`, errno in
:mod:`.errors`. Every engine call runs in a worker thread
(``trio.to_thread.run_sync`` under one CapacityLimiter) and every engine
error becomes a ``FUSEError`` here, at the edge.

WORM and audit: every engine call made for a request carries the
requesting process as its :class:`~objfs.store.Principal`
(``fuse:uid=U,pid=P``), so the engine's audit trail names who wrote,
renamed, deleted or opened a file. A retained or held version refuses every
change that would alter or hide it (unlink, rename, truncate, open for
writing, attribute and xattr changes) with EPERM, decided by the engine's
clock (:meth:`Store.lock_state`), and each refusal is an audit line
(outcome ``denied``). Reads are audited once per open, never per read().

Consistency: attributes and entries are cached by the kernel for at most
:data:`TIMEOUT` seconds and file pages are dropped at every open, so what
another front writes is visible here within a second; what is written here
is visible to the other fronts as soon as ``close()`` or ``fsync()``
returns (see :mod:`.spool`).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyfuse3
import trio

from objfs.store import ObjectInfo, ObjectReader, PreconditionFailed, Principal, Store
from objfs.store.names import check_key

from . import namespace as ns
from .errors import fuse_error
from .inodes import DIR, FILE, LINK, ROOT_INODE, Inode, InodeTable, join_path, split_path
from .principal import principal_of
from .spool import Spool, attrs_of
from .xattrs import XattrOps

log = logging.getLogger(__name__)

#: Seconds the kernel may cache entries and attributes: other fronts' changes show within it.
TIMEOUT = 0.5
#: Bytes fetched from the store per read of a committed object (one engine segment).
READ_CHUNK = 1 << 20
#: Entries fetched per index listing while reading a directory.
LIST_PAGE = 5000
NAME_MAX = 255


@dataclass(eq=False)
class Handle:
    """An open file."""

    inode: Inode
    writable: bool
    append: bool
    #: The process that opened it: its commits (flush, fsync, last close) are in its name.
    principal: Principal
    reader: ObjectReader | None = None
    cache: tuple[int, bytes] = (0, b"")
    lock: trio.Lock = field(default_factory=trio.Lock)
    #: Sequential reads stream through the engine's iter_range, which reads the
    #: next segment while this one is returned; a reader of its own, since
    #: readers are not thread-safe and the prefetch runs in the engine's pool.
    stream_reader: ObjectReader | None = None
    stream: Iterator[bytes] | None = None
    stream_pos: int = 0

    def close_readers(self) -> None:
        if self.stream is not None:
            self.stream.close()  # type: ignore[attr-defined]
        for reader in (self.reader, self.stream_reader):
            if reader is not None:
                reader.close()
        self.reader = self.stream_reader = self.stream = None


@dataclass(eq=False)
class DirHandle:
    """An open directory: a listing snapshot taken page by page, so offsets stay stable."""

    inode: Inode
    entries: list[tuple[str, ns.Stat]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    marker: str = ""
    done: bool = False


def _name(raw: bytes) -> str:
    if len(raw) > NAME_MAX:
        raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise pyfuse3.FUSEError(errno.EINVAL) from None  # keys are UTF-8


class ObjfsOperations(XattrOps, pyfuse3.Operations):
    """Buckets as directories, objects as files."""

    supports_dot_lookup = False
    enable_writeback_cache = False  # would break close-to-open: the kernel would hold dirty pages

    def __init__(self, store: Store, *, threads: int = 16) -> None:
        super().__init__()
        self.store = store
        self.inodes = InodeTable()
        self.limiter = trio.CapacityLimiter(threads)
        self.handles: dict[int, Handle] = {}
        self.dirs: dict[int, DirHandle] = {}
        self.spools: dict[int, Spool] = {}
        self._next_fh = 1
        self._mounted_ns = time.time_ns()

    # -- plumbing ----------------------------------------------------------------

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking engine call in a worker thread; engine errors become FUSEError."""
        try:
            return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self.limiter)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            raise fuse_error(exc) from None

    def _fh(self) -> int:
        self._next_fh += 1
        return self._next_fh

    def _pending(self, inode: Inode | None) -> Spool | None:
        """The spool of a file that exists only on this mount so far (created, not yet committed)."""
        if inode is None or inode.unlinked:
            return None
        spool = self.spools.get(inode.ino)
        return spool if spool is not None and spool.base is None else None

    def _attrs(self, inode: Inode, st: ns.Stat) -> pyfuse3.EntryAttributes:
        spool = self.spools.get(inode.ino)
        size, posix = st.size, st.posix
        if spool is not None and inode.kind == FILE:
            size, posix = spool.size, spool.posix
        p = attrs_of(posix)
        if not st.posix.get("mtime_ns") and st.kind == DIR:
            stamp = int(st.created * 1e9) if st.created else self._mounted_ns
            p.update(mtime_ns=stamp, atime_ns=stamp, ctime_ns=stamp)
        if st.kind == FILE and not posix.get("mtime_ns") and st.created:
            p.update(mtime_ns=int(st.created * 1e9), atime_ns=int(st.created * 1e9), ctime_ns=int(st.created * 1e9))
        fmt = {DIR: stat.S_IFDIR, FILE: stat.S_IFREG, LINK: stat.S_IFLNK}[inode.kind]
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = inode.ino
        attrs.generation = 0
        attrs.entry_timeout = TIMEOUT
        attrs.attr_timeout = TIMEOUT
        attrs.st_mode = fmt | stat.S_IMODE(p["mode"])
        attrs.st_nlink = 2 if inode.kind == DIR else 1
        attrs.st_uid = p["uid"]
        attrs.st_gid = p["gid"]
        attrs.st_rdev = 0
        attrs.st_size = size
        attrs.st_blksize = 128 * 1024
        attrs.st_blocks = (size + 511) // 512
        attrs.st_atime_ns = p["atime_ns"]
        attrs.st_mtime_ns = p["mtime_ns"]
        attrs.st_ctime_ns = p["ctime_ns"]
        return attrs

    def _spool_stat(self, spool: Spool) -> ns.Stat:
        return ns.Stat(FILE, spool.size, spool.posix)

    async def _stat(self, path: str) -> ns.Stat | None:
        pending = self._pending(self.inodes.find(path))
        if pending is not None:
            return self._spool_stat(pending)
        return await self._run(ns.stat_path, self.store, path)

    async def _stat_inode(self, inode: Inode) -> ns.Stat:
        spool = self.spools.get(inode.ino)
        if inode.unlinked:
            if spool is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self._spool_stat(spool)
        assert inode.path is not None
        st = await self._stat(inode.path)
        if st is None or st.kind != inode.kind:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return st

    def _child(self, parent_inode: int, name: bytes) -> str:
        parent = self.inodes.get(parent_inode)
        if parent.path is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return join_path(parent.path, _name(name))

    def _free(self, inode: Inode | None) -> None:
        """An inode left the table for good: its spool (an unlinked file's bytes) goes too."""
        if inode is None:
            return
        spool = self.spools.pop(inode.ino, None)
        if spool is not None:
            spool.close()

    # -- lookups and attributes -------------------------------------------------------

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        try:
            st = await self._stat(path)
        except pyfuse3.FUSEError as exc:
            if parent_inode == ROOT_INODE and exc.errno == errno.EINVAL:
                raise pyfuse3.FUSEError(errno.ENOENT) from None  # not a valid bucket name: not there
            raise
        if st is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        inode = self.inodes.for_path(path, st.kind)
        inode.lookups += 1
        return self._attrs(inode, st)

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self._free(self.inodes.forget(ino, count))

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        node = self.inodes.get(inode)
        return self._attrs(node, await self._stat_inode(node))

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self.inodes.get(inode)
        st = await self._stat_inode(node)
        principal = principal_of(ctx)
        now = time.time_ns()
        change: dict[str, int] = {}
        if fields.update_mode:
            change["mode"] = stat.S_IFMT(st.posix.get("mode", 0)) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            change["uid"] = attr.st_uid
        if fields.update_gid:
            change["gid"] = attr.st_gid
        if fields.update_mtime:
            change["mtime_ns"] = attr.st_mtime_ns
        if fields.update_atime:
            change["atime_ns"] = attr.st_atime_ns
        if change or fields.update_size:
            change["ctime_ns"] = now
            # Checked before anything changes, so a refused chmod leaves no trace in an open
            # spool either (POSIX attributes of a locked version are frozen, as by chattr +i).
            await self._refuse_if_locked(st.info, "write" if fields.update_size else "setattr", principal)
        if fields.update_size:
            if node.kind != FILE:
                raise pyfuse3.FUSEError(errno.EISDIR if node.kind == DIR else errno.EINVAL)
            await self._truncate(node, st, attr.st_size, principal)
        if change:
            await self._set_posix(node, st, change, principal)
        return await self.getattr(inode, ctx)

    async def _truncate(self, node: Inode, st: ns.Stat, size: int, principal: Principal) -> None:
        """Cut or extend the file; a file nobody has open is committed at once. Lock checked by the caller."""
        spool = self.spools.get(node.ino)
        if spool is not None:
            async with spool.lock:
                if size and not spool.loaded:
                    await self._run(spool.load, self.store)
                spool.truncate(size)
            return
        # truncate(2) of a file nobody has open: a one-shot spool, committed at once.
        spool = Spool(self.store.spool_dir, node.ino, base=st.info, posix=attrs_of(st.posix))
        self.spools[node.ino] = spool
        try:
            if size:
                await self._run(spool.load, self.store)
            spool.truncate(size)
            await self._commit(node, principal)
        finally:
            self.spools.pop(node.ino, None)
            spool.close()

    async def _set_posix(self, node: Inode, st: ns.Stat, change: dict[str, int], principal: Principal) -> None:
        spool = self.spools.get(node.ino)
        if spool is not None:
            spool.posix.update(change)
            if spool.base is None or node.unlinked:
                return  # persisted with the content at commit
        if node.unlinked or node.path is None:
            return
        bucket, key = split_path(node.path)
        if not key:
            return  # buckets and the root carry no POSIX attributes: accept, as rsync -a expects
        if node.kind == DIR:
            if st.explicit:
                await self._run(self.store.update_object, bucket, key + "/", posix=change, principal=principal)
            else:
                posix = dict(attrs_of(st.posix), **change)
                await self._run(self.store.put_object, bucket, key + "/", b"", posix=posix, principal=principal)
            return
        await self._run(self.store.update_object, bucket, key, posix=change, principal=principal)

    # -- directories ----------------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.inodes.get(inode)
        if node.kind != DIR:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = self._fh()
        self.dirs[fh] = DirHandle(node)
        return fh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self.dirs[fh]
        if start_id == 0 and handle.entries:
            self.dirs[fh] = handle = DirHandle(handle.inode)  # rewinddir: a fresh snapshot
        path = handle.inode.path
        if path is None:
            return
        index = start_id
        while True:
            while index >= len(handle.entries) and not handle.done:
                await self._fill(handle, path)
            if index >= len(handle.entries):
                return
            name, st = handle.entries[index]
            inode = self.inodes.for_path(join_path(path, name), st.kind)
            if not pyfuse3.readdir_reply(token, name.encode(), self._attrs(inode, st), index + 1):
                return
            inode.lookups += 1
            index += 1

    async def _fill(self, handle: DirHandle, path: str) -> None:
        entries, marker = await self._run(ns.list_page, self.store, path, handle.marker, LIST_PAGE)
        for name, st in entries:
            if name not in handle.names:  # an object "x" hides a directory "x/"
                handle.names.add(name)
                handle.entries.append((name, st))
        if marker is None:
            handle.done = True
            # Files created here and not yet closed exist only on this mount: list them too.
            for inode in self.inodes.under(path) if len(self.spools) else ():
                spool = self._pending(inode)
                if spool is not None and inode.path is not None and inode.path.rpartition("/")[0] == path:
                    name = inode.path.rpartition("/")[2]
                    if name not in handle.names:
                        handle.names.add(name)
                        handle.entries.append((name, self._spool_stat(spool)))
        else:
            handle.marker = marker

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        bucket, key = split_path(path)
        principal = principal_of(ctx)
        if not key:
            await self._run(self.store.create_bucket, bucket, owner=str(ctx.uid), principal=principal)
        else:
            if await self._stat(path) is not None:
                raise pyfuse3.FUSEError(errno.EEXIST)
            posix = {"mode": stat.S_IFDIR | stat.S_IMODE(mode), "uid": ctx.uid, "gid": ctx.gid}
            try:
                await trio.to_thread.run_sync(
                    functools.partial(
                        self.store.put_object, bucket, key + "/", b"", posix=posix, if_none_match=True, principal=principal
                    ),
                    limiter=self.limiter,
                )
            except PreconditionFailed:
                raise pyfuse3.FUSEError(errno.EEXIST) from None
            except Exception as exc:
                raise fuse_error(exc) from None
        return await self.lookup(parent_inode, name, ctx)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        bucket, key = split_path(path)
        principal = principal_of(ctx)
        if any(self._pending(i) for i in self.inodes.under(path)):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        if not key:
            await self._run(self.store.delete_bucket, bucket, principal=principal)
        else:
            st = await self._stat(path)
            if st is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            if st.kind != DIR:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            if await self._run(ns.has_children, self.store, path):
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            if st.explicit:
                # A marker made in a bucket with default retention is a retained object too.
                await self._refuse_if_locked(st.info, "delete", principal)
                await self._run(self.store.delete_object, bucket, key + "/", principal=principal)
        self._free(self.inodes.unlink(path))

    # -- names ----------------------------------------------------------------------

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        bucket, key = split_path(path)
        if not key:
            raise pyfuse3.FUSEError(errno.EISDIR)
        principal = principal_of(ctx)
        inode = self.inodes.find(path)
        if self._pending(inode) is None:
            st = await self._stat(path)
            if st is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            if st.kind == DIR:
                raise pyfuse3.FUSEError(errno.EISDIR)
            # The engine would accept this delete in a locked (hence versioned) bucket as a
            # delete marker, keeping the version; the file would still vanish from the
            # mount, which WORM on a filesystem forbids. So the mount refuses it itself.
            await self._refuse_if_locked(st.info, "delete", principal)
            if inode is not None and inode.opens and inode.kind == FILE:
                # Still open: keep the bytes in the spool so the handles outlive the name.
                spool = self.spools.get(inode.ino)
                if spool is None:
                    spool = self.spools[inode.ino] = Spool(
                        self.store.spool_dir, inode.ino, base=st.info, posix=attrs_of(st.posix)
                    )
                async with spool.lock:
                    await self._run(spool.load, self.store)
            await self._run(self.store.delete_object, bucket, key, principal=principal)
        self._free(self.inodes.unlink(path))

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        no_replace = bool(flags & pyfuse3.RENAME_NOREPLACE)
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        (bucket, src), (dst_bucket, dst) = split_path(old), split_path(new)
        if bucket != dst_bucket or not src or not dst:
            raise pyfuse3.FUSEError(errno.EXDEV)  # buckets are separate filesystems to mv
        principal = principal_of(ctx)
        st = await self._stat(old)
        if st is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if st.kind != DIR:
            # A directory's locked members (and its marker) are refused by the engine's
            # rename_prefix, in one transaction: nothing moves unless everything may.
            await self._refuse_if_locked(st.info, "rename", principal)
        target = await self._stat(new)
        if target is not None and no_replace:
            raise pyfuse3.FUSEError(errno.EEXIST)
        if target is not None and target.kind != DIR:
            await self._refuse_if_locked(target.info, "replace", principal)  # replacing it would hide it
        if st.kind == DIR:
            if target is not None:
                if target.kind != DIR:
                    raise pyfuse3.FUSEError(errno.ENOTDIR)
                if await self._run(ns.has_children, self.store, new):
                    raise pyfuse3.FUSEError(errno.ENOTEMPTY)
                if target.explicit:
                    await self._refuse_if_locked(target.info, "replace", principal)
                    await self._run(self.store.delete_object, bucket, dst + "/", principal=principal)
            await self._run(self.store.rename_prefix, bucket, src + "/", dst + "/", principal=principal)
        else:
            if target is not None and target.kind == DIR:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if self._pending(self.inodes.find(old)) is not None:
                if target is not None and self._pending(self.inodes.find(new)) is None:
                    await self._run(self.store.delete_object, bucket, dst, principal=principal)  # the rename replaces it
            else:
                await self._run(self.store.rename_object, bucket, src, dst, no_replace=no_replace, principal=principal)
        for gone in self.inodes.rename(old, new, directory=st.kind == DIR):
            self._free(gone)

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        bucket, key = split_path(path)
        if not key:
            raise pyfuse3.FUSEError(errno.EPERM)  # the root holds buckets only
        if await self._stat(path) is not None:
            raise pyfuse3.FUSEError(errno.EEXIST)
        posix = {"mode": stat.S_IFLNK | 0o777, "uid": ctx.uid, "gid": ctx.gid}
        await self._run(self.store.put_object, bucket, key, bytes(target), posix=posix, principal=principal_of(ctx))
        return await self.lookup(parent_inode, name, ctx)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.inodes.get(inode)
        if node.kind != LINK or node.path is None:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return await self._run(self.store.get_object_bytes, *split_path(node.path))

    # -- files ------------------------------------------------------------------------

    async def _refuse_if_locked(self, info: ObjectInfo | None, action: str, principal: Principal) -> None:
        """WORM: raise EPERM if ``info``'s version is retained or held now, after auditing the refusal.

        The engine decides (:meth:`Store.lock_state`, on the engine's clock,
        which is the one the WORM rules and tests move), so the mount can
        never release a file earlier or later than S3 or the CLI would.
        ``info`` is None for a file that exists only on this mount (nothing
        committed, nothing retained). The refusal is a durable ``denied``
        audit line, as the engine writes for the refusals it makes itself;
        if the audit log cannot be written the request is refused all the same.
        """
        if info is None:
            return
        # No I/O: a look at the record and the clock. Renames and attribute changes
        # honour the engine's commit grace (write-to-temp-then-rename on WORM buckets).
        reason = self.store.lock_state(info, action=action)
        if reason is None:
            return
        try:
            await self._run(
                self.store.record_audit,
                action,
                principal,
                "denied",
                True,
                bucket=info.bucket,
                key=info.key,
                version=info.version_id,
                detail=f"{info.bucket}/{info.key} is locked ({reason})",
            )
        except pyfuse3.FUSEError as exc:
            log.error("could not audit a refused %s of %s/%s: %s", action, info.bucket, info.key, os.strerror(exc.errno))
        raise pyfuse3.FUSEError(errno.EPERM)

    async def _audit_read(self, path: str, version: str | None, principal: Principal) -> None:
        """One non-durable ``read`` audit line, for opens that do not go through ``open_object``."""
        bucket, key = split_path(path)
        await self._run(self.store.record_audit, "read", principal, "ok", False, bucket=bucket, key=key, version=version)

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._child(parent_inode, name)
        bucket, key = split_path(path)
        if not key:
            raise pyfuse3.FUSEError(errno.EPERM)  # the root holds buckets only
        try:
            check_key(key)
        except Exception as exc:
            raise fuse_error(exc) from None
        now = time.time_ns()
        posix = {"mode": stat.S_IFREG | stat.S_IMODE(mode), "uid": ctx.uid, "gid": ctx.gid}
        posix.update(mtime_ns=now, atime_ns=now, ctime_ns=now)
        inode = self.inodes.for_path(path, FILE)
        old = self.spools.get(inode.ino)
        if old is not None and old.handles:
            raise pyfuse3.FUSEError(errno.EEXIST)  # open for write here already
        if old is not None:
            old.close()
        self.spools[inode.ino] = spool = Spool(self.store.spool_dir, inode.ino, base=None, posix=posix)
        inode.lookups += 1
        info = self._open_handle(inode, flags, spool, principal_of(ctx))
        return info, self._attrs(inode, self._spool_stat(spool))

    def _open_handle(self, inode: Inode, flags: int, spool: Spool | None, principal: Principal) -> pyfuse3.FileInfo:
        writable = flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
        handle = Handle(inode, writable, bool(flags & os.O_APPEND), principal)
        if writable and spool is not None:
            spool.handles += 1
        inode.opens += 1
        fh = self._fh()
        self.handles[fh] = handle
        # keep_cache=False: the kernel drops cached pages at open, so an open sees the latest commit.
        return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=False)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        """Open a file; a read of a stored object is one ``read`` audit line naming the caller.

        Opening for writing (O_WRONLY, O_RDWR; O_TRUNC and O_APPEND imply
        it) a retained or held version is EPERM, checked against the
        current version in the store, not a cached one.
        """
        node = self.inodes.get(inode)
        if node.kind != FILE:
            raise pyfuse3.FUSEError(errno.EISDIR if node.kind == DIR else errno.ELOOP)
        principal = principal_of(ctx)
        access = flags & os.O_ACCMODE
        writable = access in (os.O_WRONLY, os.O_RDWR)
        spool = self.spools.get(node.ino)
        reader = None
        if node.unlinked:
            if spool is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
        elif writable:
            assert node.path is not None
            st = await self._stat(node.path)
            if spool is None and (st is None or st.kind != FILE or st.info is None):
                raise pyfuse3.FUSEError(errno.ENOENT)
            if st is not None and st.kind == FILE:
                # Also when another handle already writes here: that one opened before the
                # lock was placed, a new writer may not.
                await self._refuse_if_locked(st.info, "write", principal)
            if spool is None:
                assert st is not None
                spool = self.spools[node.ino] = Spool(self.store.spool_dir, node.ino, base=st.info, posix=attrs_of(st.posix))
            if access == os.O_RDWR:
                await self._audit_read(node.path, st.info.version_id if st and st.info else None, principal)
        elif spool is None:
            assert node.path is not None
            # The engine's audited open: one head, one audit line, the reader the handle keeps.
            reader = await self._run(self.store.open_object, *split_path(node.path), principal=principal)
            if ns.stat_of_info(reader.info).kind != FILE:  # replaced by a symlink meanwhile
                await self._run(reader.close)
                raise pyfuse3.FUSEError(errno.ENOENT)
        else:
            # Being written on this mount: reads come from the spool (or its base), not open_object.
            assert node.path is not None
            base = spool.base
            await self._audit_read(node.path, base.version_id if base is not None else None, principal)
        if writable and flags & os.O_TRUNC and spool is not None:
            async with spool.lock:
                spool.truncate(0)
        info = self._open_handle(node, flags, spool if writable else None, principal)
        self.handles[info.fh].reader = reader
        return info

    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.handles[fh]
        spool = self.spools.get(handle.inode.ino)
        if spool is not None and spool.loaded:
            return spool.read(off, size)
        start, data = handle.cache
        if start <= off and off + size <= start + len(data):
            return data[off - start : off - start + size]  # the common case: no lock, no thread
        async with handle.lock:
            if handle.reader is None:
                base = spool.base if spool is not None else None
                if base is None and handle.inode.path is not None:
                    # Opened while the file was still being created here; it is committed now.
                    base = (await self._stat_inode(handle.inode)).info
                if base is None:
                    raise pyfuse3.FUSEError(errno.EIO)
                handle.reader = await self._run(self.store.open_record, base.record)
            start, data = handle.cache
            if start <= off and off + size <= start + len(data) or off >= handle.reader.info.size:
                return data[off - start : off - start + size]
            if off == start + len(data):
                start, data = await self._next_chunk(handle, off)
            if not (start <= off and off + size <= start + len(data)):
                start = off - off % READ_CHUNK
                data = await self._run(handle.reader.read, start, max(READ_CHUNK, off + size - start))
            handle.cache = (start, data)
            return data[off - start : off - start + size]

    async def _next_chunk(self, handle: Handle, off: int) -> tuple[int, bytes]:
        """The next segment of a sequential read, from the prefetching stream."""
        assert handle.reader is not None
        if handle.stream is None or handle.stream_pos != off:
            if handle.stream_reader is None:
                handle.stream_reader = await self._run(self.store.open_record, handle.reader.info.record)
            elif handle.stream is not None:
                handle.stream.close()  # type: ignore[attr-defined]
            handle.stream = handle.stream_reader.iter_range(off, handle.reader.info.size)
            handle.stream_pos = off
        chunk = await self._run(next, handle.stream, b"")
        start = handle.stream_pos
        handle.stream_pos += len(chunk)
        return start, bytes(chunk)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.handles[fh]
        if not handle.writable:
            raise pyfuse3.FUSEError(errno.EBADF)
        spool = self.spools[handle.inode.ino]
        if not spool.loaded:
            async with spool.lock:
                await self._run(spool.load, self.store)
        return spool.write(spool.size if handle.append else off, buf)

    async def _commit(self, inode: Inode, principal: Principal) -> None:
        """Store the inode's spool as its object if it changed. Durable when it returns.

        ``principal`` is the process that opened the handle being flushed,
        fsynced or closed: the audit line of the write names it.
        """
        spool = self.spools.get(inode.ino)
        if spool is None or inode.unlinked or inode.path is None:
            return
        async with spool.lock:
            if not spool.dirty:
                return
            if not spool.loaded:
                await self._run(spool.load, self.store)
            bucket, key = split_path(inode.path)
            spool.dirty = False
            try:
                await self._run(spool.commit, self.store, bucket, key, spool.size, principal=principal)
            except BaseException:
                spool.dirty = spool.failed = True
                raise

    async def flush(self, fh: int) -> None:
        # close() returns what flush returns: a failed commit must surface here.
        handle = self.handles[fh]
        if handle.writable:
            await self._commit(handle.inode, handle.principal)

    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self.handles[fh]
        if handle.writable:
            await self._commit(handle.inode, handle.principal)

    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        inode = handle.inode
        if handle.reader is not None or handle.stream_reader is not None:
            await self._run(handle.close_readers)
        spool = self.spools.get(inode.ino) if handle.writable else None
        if spool is not None:
            spool.handles -= 1
            if spool.handles == 0 and not inode.unlinked:
                if spool.dirty and not spool.failed:
                    try:
                        await self._commit(inode, handle.principal)
                    except pyfuse3.FUSEError as exc:
                        log.error("commit of %s on last close failed: %s", inode.path, os.strerror(exc.errno))
                if not spool.dirty or spool.failed:
                    # Committed, or its failure was reported by close(): the spool's job is done.
                    self.spools.pop(inode.ino, None)
                    spool.close()
        self._free(self.inodes.release(inode))

    # -- filesystem -------------------------------------------------------------------

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        cap = await self._run(self.store.capacity)
        st = pyfuse3.StatvfsData()
        st.f_bsize = st.f_frsize = 4096
        st.f_blocks = cap["total"] // 4096
        st.f_bfree = st.f_bavail = cap["free"] // 4096
        st.f_files = 1 << 32
        st.f_ffree = st.f_favail = (1 << 32) - len(self.inodes)
        st.f_namemax = NAME_MAX
        return st
