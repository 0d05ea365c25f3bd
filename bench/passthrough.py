"""A minimal passthrough FUSE filesystem: the FUSE baseline of ``fuse_bench``.

Same stack as the objfs mount (pyfuse3 on trio, same mount options, same
kernel attribute timeouts) but every request goes straight to a directory,
so ``fuse_bench`` can tell what FUSE itself costs from what objfs adds.
Like objfs, it makes a file durable when it is closed: a file written
through a handle is fsynced on flush (what ``close()`` waits for) and
release, so both sides of the comparison write durably.

    python -m bench.passthrough SOURCE MOUNTPOINT
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys

import pyfuse3
import trio

TIMEOUT = 0.5


class Passthrough(pyfuse3.Operations):
    def __init__(self, source: str) -> None:
        super().__init__()
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: source}
        self.inos: dict[str, int] = {source: pyfuse3.ROOT_INODE}
        self.next = pyfuse3.ROOT_INODE + 1
        self.fds: dict[int, int] = {}
        self.dirty: set[int] = set()  # handles written since their last fsync

    def _ino(self, path: str) -> int:
        ino = self.inos.get(path)
        if ino is None:
            ino = self.inos[path] = self.next
            self.paths[ino] = path
            self.next += 1
        return ino

    def _attrs(self, path: str) -> pyfuse3.EntryAttributes:
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        a = pyfuse3.EntryAttributes()
        for name in (
            "st_mode",
            "st_nlink",
            "st_uid",
            "st_gid",
            "st_rdev",
            "st_size",
            "st_atime_ns",
            "st_mtime_ns",
            "st_ctime_ns",
        ):
            setattr(a, name, getattr(st, name))
        a.st_blksize, a.st_blocks = st.st_blksize, st.st_blocks
        a.st_ino = self._ino(path)
        a.entry_timeout = a.attr_timeout = TIMEOUT
        return a

    def _child(self, parent: int, name: bytes) -> str:
        return os.path.join(self.paths[parent], os.fsdecode(name))

    async def lookup(self, parent_inode, name, ctx):
        return self._attrs(self._child(parent_inode, name))

    async def getattr(self, inode, ctx):
        return self._attrs(self.paths[inode])

    async def setattr(self, inode, attr, fields, fh, ctx):
        path = self.paths[inode]
        if fields.update_size:
            os.truncate(path, attr.st_size)
        if fields.update_mode:
            os.chmod(path, stat.S_IMODE(attr.st_mode))
        if fields.update_mtime or fields.update_atime:
            st = os.lstat(path)
            os.utime(
                path,
                ns=(
                    attr.st_atime_ns if fields.update_atime else st.st_atime_ns,
                    attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns,
                ),
            )
        return self._attrs(path)

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, fh, start_id, token):
        path = self.paths[fh]
        names = sorted(os.listdir(path))
        for i, name in enumerate(names[start_id:], start_id):
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attrs(os.path.join(path, name)), i + 1):
                return

    async def mkdir(self, parent_inode, name, mode, ctx):
        path = self._child(parent_inode, name)
        os.mkdir(path, mode)
        return self._attrs(path)

    async def unlink(self, parent_inode, name, ctx):
        os.unlink(self._child(parent_inode, name))

    async def rmdir(self, parent_inode, name, ctx):
        os.rmdir(self._child(parent_inode, name))

    async def open(self, inode, flags, ctx):
        fd = os.open(self.paths[inode], flags & ~os.O_CREAT)
        self.fds[fd] = fd
        return pyfuse3.FileInfo(fh=fd)

    async def create(self, parent_inode, name, mode, flags, ctx):
        path = self._child(parent_inode, name)
        fd = os.open(path, flags | os.O_CREAT | os.O_TRUNC, mode)
        self.fds[fd] = fd
        return pyfuse3.FileInfo(fh=fd), self._attrs(path)

    async def read(self, fh, off, size):
        return os.pread(fh, size, off)

    async def write(self, fh, off, buf):
        self.dirty.add(fh)
        return os.pwrite(fh, buf, off)

    async def flush(self, fh):
        # close() returns what flush returns: the file is durable when close() is.
        if fh in self.dirty:
            self.dirty.discard(fh)
            os.fsync(fh)

    async def fsync(self, fh, datasync):
        self.dirty.discard(fh)
        (os.fdatasync if datasync else os.fsync)(fh)

    async def release(self, fh):
        self.fds.pop(fh, None)
        if fh in self.dirty:  # written after its last flush (a write through mmap, say)
            self.dirty.discard(fh)
            os.fsync(fh)
        os.close(fh)

    async def statfs(self, ctx):
        st = os.statvfs(self.paths[pyfuse3.ROOT_INODE])
        out = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail", "f_namemax"):
            setattr(out, name, getattr(st, name))
        return out


async def _serve() -> None:
    async with trio.open_nursery() as nursery:

        async def stop() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(stop)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    source, mountpoint = (argv if argv is not None else sys.argv[1:])[:2]
    options = set(pyfuse3.default_options) | {"fsname=passthrough"}
    pyfuse3.init(Passthrough(os.path.abspath(source)), mountpoint, options)
    try:
        trio.run(_serve)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(errno.EINVAL)
    sys.exit(main())
