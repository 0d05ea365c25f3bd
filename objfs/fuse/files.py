"""Open files and reads: create, open, read, release.

Reads of a stored file go through the engine's audited open
(``store.open_object`` with the caller's principal): one ``read`` audit
line per open, never per read(). The handle keeps the reader of the
version it opened for its whole life, so a process holding a file open
reads that version to the end, whatever replaces the file meanwhile (the
engine keeps a version's fragments while a reader holds it).

A handle opened for writing, or while the file was being written on this
mount, reads the inode's spool instead (see :mod:`.spool`), then the
commit it became. File pages are dropped at every open, so an open sees
the latest commit (close-to-open consistency).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time

import pyfuse3

from objfs.store import NoSuchKey, NoSuchVersion, ObjectInfo, ObjectReader, Principal
from objfs.store.names import check_key

from . import namespace as ns
from .core import Handle, MountState
from .errors import fuse_error
from .inodes import DIR, FILE, Inode, split_path
from .principal import principal_of
from .spool import Spool, attrs_of

log = logging.getLogger(__name__)

#: Bytes fetched from the store per read of a committed object (one engine segment).
READ_CHUNK = 1 << 20
#: Reads up to this size that miss the handle's cache fetch only the fragment share holding them.
SMALL_READ = 128 << 10


class FileOps(MountState):
    """create, open, read, release."""

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        """A new file, in a spool until its creator's handle commits it (also when opened read-only).

        ``open(O_CREAT|O_RDONLY)`` (``flock newfile``, ``touch`` through some
        libraries) makes a file as surely as ``O_WRONLY``: the creating
        handle holds the spool whatever its access mode, so flush, fsync and
        the last close store it (an empty object at least).
        """
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
            self.spools.pop(inode.ino)
            old.close()
        spool = self._new_spool(inode, None, posix)
        inode.lookups += 1
        info = self._open_handle(inode, flags, principal_of(ctx), holds_spool=True, via_spool=True)
        return info, self._attrs(inode, self._spool_stat(spool))

    def _open_handle(
        self,
        inode: Inode,
        flags: int,
        principal: Principal,
        *,
        holds_spool: bool,
        via_spool: bool,
        reader: ObjectReader | None = None,
    ) -> pyfuse3.FileInfo:
        writable = flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
        handle = Handle(inode, writable, bool(flags & os.O_APPEND), principal, holds_spool, via_spool, reader)
        if holds_spool:
            self.spools[inode.ino].handles += 1
        inode.opens += 1
        fh = self._fh()
        self.handles[fh] = handle
        # keep_cache=False: the kernel drops cached pages at open, so an open sees the latest commit.
        return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=False)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        """Open a file; a read of a stored version is one ``read`` audit line naming the caller.

        Opening for writing (O_WRONLY, O_RDWR; O_TRUNC and O_APPEND imply
        it) a retained or held version is EPERM, checked against the
        current version in the store, not a cached one.
        """
        node = self.inodes.get(inode)
        if node.kind != FILE:
            raise pyfuse3.FUSEError(errno.EISDIR if node.kind == DIR else errno.ELOOP)
        async with node.busy:
            return await self._open(node, flags, principal_of(ctx))

    async def _open(self, node: Inode, flags: int, principal: Principal) -> pyfuse3.FileInfo:
        access = flags & os.O_ACCMODE
        writable = access in (os.O_WRONLY, os.O_RDWR)
        spool = self.spools.get(node.ino)
        reader = None
        if node.unlinked:
            if spool is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
        elif spool is None and not writable:
            assert node.path is not None
            # The engine's audited open: one head, one audit line, the reader the handle keeps.
            reader = await self._run(self.store.open_object, *split_path(node.path), principal=principal)
            if ns.stat_of_info(reader.info).kind != FILE:  # replaced by a symlink meanwhile
                await self._run(reader.close)
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self._open_handle(node, flags, principal, holds_spool=False, via_spool=False, reader=reader)
        else:
            assert node.path is not None
            st = await self._stat(node.path)
            if spool is None and (st is None or st.kind != FILE or st.info is None):
                raise pyfuse3.FUSEError(errno.ENOENT)
            if writable and st is not None and st.kind == FILE:
                # Also when another handle already writes here: that one opened before the
                # lock was placed, a new writer may not.
                await self._check_change(st.info, "write", principal)
            base = spool.base if spool is not None else st.info if st is not None else None
            if access != os.O_WRONLY:
                # Reading what is stored (the spool's base) is audited by the engine's open.
                reader = await self._open_version(node, base, principal)
            if spool is None:
                assert base is not None
                try:
                    spool = self._new_spool(node, base, attrs_of(base.posix))
                except BaseException:
                    if reader is not None:
                        await self._run(reader.close)
                    raise
        if writable and flags & os.O_TRUNC:
            try:
                async with spool.lock:
                    spool.truncate(0)
            except BaseException:
                if spool.handles == 0 and not node.unlinked and self.spools.get(node.ino) is spool:
                    self._free_spool(node)
                if reader is not None:
                    await self._run(reader.close)
                raise
        return self._open_handle(node, flags, principal, holds_spool=writable, via_spool=True, reader=reader)

    async def _open_version(self, node: Inode, version: ObjectInfo | None, principal: Principal) -> ObjectReader | None:
        """The engine's audited open of ``version`` of the file (None: nothing stored to read, or gone)."""
        if version is None or node.path is None:
            return None
        bucket, key = split_path(node.path)
        try:
            return await self._run(self._open_object_quietly, bucket, key, version.version_id, principal)
        except pyfuse3.FUSEError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def _open_object_quietly(self, bucket: str, key: str, version_id: str, principal: Principal) -> ObjectReader | None:
        try:
            return self.store.open_object(bucket, key, version_id, principal=principal)
        except (NoSuchKey, NoSuchVersion):
            return None  # replaced or deleted by another front meanwhile: the spool is what is read

    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.handles[fh]
        spool = self._spool_to_read(handle)
        if spool is not None:
            return spool.read(off, size)
        start, data = handle.cache
        if start <= off and off + size <= start + len(data):
            return data[off - start : off - start + size]  # the common case: no lock, no thread
        async with handle.lock:
            if handle.via_spool:
                await self._follow_spool(handle)
            if handle.reader is None:
                raise pyfuse3.FUSEError(errno.EIO)
            start, data = handle.cache
            if start <= off and off + size <= start + len(data) or off >= handle.reader.info.size:
                return data[off - start : off - start + size]
            if off == start + len(data):
                start, data = await self._next_chunk(handle, off)
            if not (start <= off and off + size <= start + len(data)) and size <= SMALL_READ:
                # A random small read: the CRC blocks of the one fragment that hold it, not a whole segment.
                start, data = await self._run_cached(handle.reader.read_piece, off, size)
            if not (start <= off and off + size <= start + len(data)):
                start = off - off % READ_CHUNK
                data = await self._run(handle.reader.read, start, max(READ_CHUNK, off + size - start))
            handle.cache = (start, data)
            return data[off - start : off - start + size]

    def _spool_to_read(self, handle: Handle) -> Spool | None:
        """The spool that holds exactly what ``handle`` reads, if any."""
        spool = self.spools.get(handle.inode.ino)
        if spool is None or not spool.loaded:
            return None
        if handle.via_spool:
            return spool
        # A file unlinked while open keeps its bytes in a spool: the same version, when clean.
        same = spool.base is not None and handle.reader is not None and spool.base.object_id == handle.reader.info.object_id
        return spool if same and not spool.dirty else None

    async def _follow_spool(self, handle: Handle) -> None:
        """Point a spool handle's reader at the spool's base, or at the commit the spool became."""
        spool = self.spools.get(handle.inode.ino)
        want = spool.base if spool is not None else None
        if want is None and spool is None and handle.inode.path is not None:
            want = (await self._stat_inode(handle.inode)).info
        if want is None:
            return
        if handle.reader is not None and handle.reader.info.object_id == want.object_id:
            return
        await self._run(handle.close_readers)
        handle.reader = await self._run(self.store.open_record, want.record)

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

    async def release(self, fh: int) -> None:
        """Close a handle: the last holder of a spool commits it; nothing here may take the mount down."""
        handle = self.handles.pop(fh)
        inode = handle.inode
        try:
            if handle.reader is not None or handle.stream_reader is not None:
                try:
                    await self._run(handle.close_readers)
                except pyfuse3.FUSEError as exc:
                    log.error("closing the readers of %s failed: %s", inode.path, os.strerror(exc.errno))
            if handle.holds_spool:
                async with inode.busy:
                    spool = self.spools.get(inode.ino)
                    if spool is not None:
                        spool.handles -= 1
                        if spool.handles == 0 and not inode.unlinked:
                            await self._last_close(inode, spool, handle.principal)
        finally:
            self._free(self.inodes.release(inode))

    async def _last_close(self, inode: Inode, spool: Spool, principal: Principal) -> None:
        if spool.dirty and not spool.failed:
            try:
                await self._commit(inode, principal)  # type: ignore[attr-defined]
            except pyfuse3.FUSEError as exc:
                log.error("commit of %s on last close failed: %s", inode.path, os.strerror(exc.errno))
        if not spool.dirty or spool.failed:
            # Committed, or its failure was reported by close(): the spool's job is done.
            self._free_spool(inode)
