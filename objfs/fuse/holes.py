"""Finding a spool file's data: holes cost nothing in a sparse version.

:func:`data_extents` lists the ranges of a file that hold other than zeros
(SEEK_DATA/SEEK_HOLE first, then aligned :data:`HOLE_BLOCK` blocks that read
as zeros); :class:`ExtentStream` reads those ranges back to back for
``put_object(..., extents=...)``. Reading never changes the file.
"""

from __future__ import annotations

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
