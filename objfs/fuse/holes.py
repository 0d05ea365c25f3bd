"""Finding a spool file's data: holes cost nothing in a sparse version.

:func:`data_extents` lists the ranges of a file that hold other than zeros
(SEEK_DATA/SEEK_HOLE first, then aligned :data:`HOLE_BLOCK` blocks that read
as zeros); :class:`ExtentStream` reads those ranges back to back for
``put_object(..., extents=...)``. Reading never changes the file.
:func:`punch_hole` makes a range of a spool file read as zeros, as a hole
where the spool's filesystem can punch one.
"""

from __future__ import annotations

import ctypes
import errno
import os

COPY_CHUNK = 4 << 20
#: Aligned all-zero blocks of this size become holes at the commit.
HOLE_BLOCK = 64 << 10
_ZERO_BLOCK = bytes(HOLE_BLOCK)
_ZEROS = bytes(1 << 20)


def is_zero(data: bytes) -> bool:
    """Whether ``data`` is all zeros (cheap when it is not: most data fails on its first or last byte)."""
    if not data or data[0] or data[-1]:
        return False
    view = memoryview(data)
    while view:
        n = min(len(view), len(_ZEROS))
        if view[:n] != _ZEROS[:n]:
            return False
        view = view[n:]
    return True


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc: ctypes.CDLL | None = None


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Make ``[offset, offset+length)`` of ``fd`` read as zeros; the file's size never changes.

    A hole in the spool file where its filesystem punches one (ext4, xfs,
    btrfs, tmpfs), else zeros written over the part inside the file (the
    commit elides aligned zero blocks all the same).
    """
    if length <= 0:
        return
    try:
        _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    end = min(offset + length, os.fstat(fd).st_size)
    pos = offset
    while pos < end:
        pos += os.pwrite(fd, _ZEROS[: min(len(_ZEROS), end - pos)], pos)


def data_extents(fd: int, length: int) -> list[tuple[int, int]]:
    """The ``(offset, length)`` ranges of the first ``length`` bytes of ``fd`` that hold other than zeros.

    Holes are found with SEEK_DATA/SEEK_HOLE (no read); within data, aligned
    :data:`HOLE_BLOCK` blocks that read as zeros are left out as well.
    """
    extents: list[list[int]] = []

    def add(offset: int, size: int) -> None:
        if extents and extents[-1][0] + extents[-1][1] == offset:
            extents[-1][1] += size
        else:
            extents.append([offset, size])

    pos = 0
    while pos < length:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no data after pos
                raise
            break
        if start >= length:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), length)
        chunk_start = start - start % HOLE_BLOCK
        while chunk_start < end:
            chunk = os.pread(fd, min(COPY_CHUNK, end - chunk_start), chunk_start)
            if not chunk:
                break
            for lo in range(0, len(chunk), HOLE_BLOCK):
                block_start = max(chunk_start + lo, start)
                block = chunk[block_start - chunk_start : lo + HOLE_BLOCK]
                if block and block != _ZERO_BLOCK[: len(block)]:
                    add(block_start, len(block))
            chunk_start += len(chunk)
        pos = end
    return [(offset, size) for offset, size in extents]


class ExtentStream:
    """A read-only stream over the data ``extents`` of a spool, concatenated (for a sparse put_object)."""

    def __init__(self, fd: int, extents: list[tuple[int, int]]) -> None:
        self._fd = fd
        self._extents = list(extents)
        self._index = 0
        self._into = 0

    def read(self, size: int = -1) -> bytes:
        out = []
        want = size if size >= 0 else sum(n for _, n in self._extents)
        while want > 0 and self._index < len(self._extents):
            offset, length = self._extents[self._index]
            data = os.pread(self._fd, min(want, length - self._into), offset + self._into)
            if not data:  # the spool was cut meanwhile: the engine reports the short body
                self._index = len(self._extents)
                break
            out.append(data)
            want -= len(data)
            self._into += len(data)
            if self._into == length:
                self._index, self._into = self._index + 1, 0
        return b"".join(out)
