"""Writes and commits: write, fallocate, truncate, flush, fsync.

Writes land in the inode's spool; flush (what ``close()`` returns), fsync
and the last release commit it as the file's new version (see
:mod:`.spool`). A version committed into a bucket with a default retention
is locked from that moment: further writes (and fallocate) through a
descriptor that was open before are refused (EPERM, audited by the engine),
as a new open for writing would be. Spool I/O errors (EFBIG, ENOSPC, ...)
reach the caller as that errno.

fallocate(2): mode 0 and FALLOC_FL_KEEP_SIZE reserve nothing (the range is a
hole until written, and holes are free); they only refuse, with ENOSPC, a
range larger than the store's free space (``df``'s Avail) at that moment, so
a later write or close may still meet ENOSPC. FALLOC_FL_PUNCH_HOLE and
FALLOC_FL_ZERO_RANGE make the range read as zeros at once and store it as a
hole at the commit. Other modes are EOPNOTSUPP.
"""

from __future__ import annotations

import errno

import pyfuse3

from objfs.store import Principal

from . import namespace as ns
from .core import MountState
from .inodes import Inode, split_path
from .spool import STREAM_ZERO_RUN, Spool, attrs_of

# <linux/falloc.h> (Python's os module has no names for them).
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10


class WriteOps(MountState):
    """write, fallocate, truncate (for setattr), flush, fsync, and the commit they share."""

    async def _check_write(self, spool: Spool, principal: Principal) -> None:
        """EPERM if the version the spool started from (or last committed) is locked now."""
        base = spool.base
        if base is not None and (base.retention or base.legal_hold):
            # A lock can only come with a version: most writes need no engine call here.
            await self._check_change(base, "write", principal)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.handles[fh]
        if not handle.writable:
            raise pyfuse3.FUSEError(errno.EBADF)
        spool = self.spools[handle.inode.ino]
        await self._check_write(spool, handle.principal)
        if not spool.loaded:
            async with spool.lock:
                await self._run(spool.load, self.store)
        offset = spool.size if handle.append else off
        if offset == 0 and handle.inode.path is not None:
            bucket, key = split_path(handle.inode.path)
            spool.start_stream(self.store, bucket, key, handle.principal)
        written = spool.write(offset, buf)
        stream = spool.stream
        if stream is not None:
            async with stream.order:  # a write waiting for the put keeps the later ones behind it
                if spool.stream is not stream:
                    pass  # abandoned meanwhile
                elif offset != stream.pos:
                    spool.abandon_stream()  # not sequential: the spool file is committed instead
                elif stream.zero_run(buf) >= STREAM_ZERO_RUN:
                    spool.abandon_stream()  # a long run of zeros: the spool commit stores it as a hole
                else:
                    stream.pos += len(buf)
                    if not stream.offer(buf):
                        await self._run(stream.feed, buf)
        return written

    async def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        handle = self.handles[fh]
        if not handle.writable:
            raise pyfuse3.FUSEError(errno.EBADF)
        zeroing = mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)
        if mode & ~(FALLOC_FL_KEEP_SIZE | zeroing) or zeroing == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE:
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)  # collapse, insert, unshare: the kernel refuses most itself
        if zeroing == FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE:
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)  # as fallocate(2): a punch never changes the size
        if offset < 0 or length <= 0:
            raise pyfuse3.FUSEError(errno.EINVAL)
        spool = self.spools[handle.inode.ino]
        await self._check_write(spool, handle.principal)
        keep_size = bool(mode & FALLOC_FL_KEEP_SIZE)
        if not zeroing and length > (await self._run(self.store.capacity))["free"]:
            raise pyfuse3.FUSEError(errno.ENOSPC)  # the only promise an allocation makes (module docstring)
        async with spool.lock:
            grows = not keep_size and offset + length > spool.size
            if not spool.loaded and (grows or (zeroing and offset < spool.size)):
                await self._run(spool.load, self.store)
            if zeroing:
                spool.zero(offset, length, keep_size=keep_size)
            else:
                spool.allocate(offset, length, keep_size=keep_size)

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
        spool = self._new_spool(node, st.info, attrs_of(st.posix))
        try:
            if size:
                await self._run(spool.load, self.store)
            spool.truncate(size)
            await self._commit(node, principal)
        finally:
            self._free_spool(node)

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
        if handle.holds_spool:
            await self._commit(handle.inode, handle.principal)

    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self.handles[fh]
        if handle.holds_spool:
            await self._commit(handle.inode, handle.principal)
