"""Sparse versions: holes that cost no fragments.

A record may carry ``extents``: a sorted list of ``[offset, length]`` data
ranges of its logical content (``size`` bytes). Its blob(s) hold only those
ranges, concatenated in order; every byte outside them is a hole and reads
as zero without touching a drive. A record without ``extents`` is dense: its
blob bytes are its content, as before. The field is part of the record, so
it is in the fragments' footers and the ``.meta`` files like every other
field (rebuild-index restores it); gc, scrub, heal and the mover work on
blobs and never need to know about holes.

The ETag of a sparse version is the MD5 of its full logical bytes (zeros
included), as S3 clients expect of a one-part object.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from .errors import InvalidArgument

#: Zeros handed out for holes (a shared buffer: a hole never allocates).
_ZEROS = bytes(1 << 20)
#: At most this many extents per version: more are merged (their gaps stored as zeros).
MAX_EXTENTS = 4096


def normalized_extents(extents: list[tuple[int, int]] | list[list[int]], size: int) -> list[list[int]] | None:
    """``extents`` checked (sorted, disjoint, inside ``size``), adjacent ones merged.

    Returns None when they cover the whole content (the version is dense).
    Raises InvalidArgument on overlapping or out-of-range extents.
    """
    out: list[list[int]] = []
    for offset, length in extents:
        if length <= 0:
            continue
        if offset < 0 or offset + length > size or (out and offset < out[-1][0] + out[-1][1]):
            raise InvalidArgument(f"bad data extent ({offset}, {length}) for a {size}-byte content")
        if out and offset == out[-1][0] + out[-1][1]:
            out[-1][1] += length
        else:
            out.append([int(offset), int(length)])
    while len(out) > MAX_EXTENTS:
        out = _merge_closest(out)
    if (len(out) == 1 and out[0] == [0, size]) or (not out and size == 0):
        return None
    return out


def _merge_closest(extents: list[list[int]]) -> list[list[int]]:
    """Halve the extent count by closing the smaller half of the gaps."""
    gaps = sorted(extents[i + 1][0] - (extents[i][0] + extents[i][1]) for i in range(len(extents) - 1))
    limit = gaps[len(gaps) // 2]
    out = [list(extents[0])]
    for offset, length in extents[1:]:
        if offset - (out[-1][0] + out[-1][1]) <= limit:
            out[-1][1] = offset + length - out[-1][0]
        else:
            out.append([offset, length])
    return out


def stored_size(record: dict[str, Any]) -> int:
    """Bytes of content a version keeps on its drives (its size when dense)."""
    extents = record.get("extents")
    return record["size"] if not extents else sum(length for _, length in extents)


def zeros(count: int) -> Iterator[bytes]:
    while count > 0:
        n = min(count, len(_ZEROS))
        yield _ZEROS if n == len(_ZEROS) else _ZEROS[:n]
        count -= n


class LogicalDigest:
    """Wraps the stream of a sparse body's stored bytes; learns the MD5 and head of its logical bytes.

    ``read`` passes the stored bytes through (to the blob writer); the MD5
    also takes the holes' zeros, in order, so :meth:`finish` gives the ETag
    of the full content. ``head`` is its first ``head_bytes`` logical bytes.
    """

    def __init__(self, source: BinaryIO, extents: list[list[int]], size: int, head_bytes: int) -> None:
        self._source = source
        self._extents = extents
        self.size = size
        self._md5 = hashlib.md5()
        self._logical = 0  # logical offset the MD5 has reached
        self._index = 0  # current extent
        self._into = 0  # bytes of it already read
        self._head_bytes = head_bytes
        self.head = bytearray()

    def _feed(self, data: bytes | memoryview) -> None:
        self._md5.update(data)
        if len(self.head) < self._head_bytes:
            self.head += data[: self._head_bytes - len(self.head)]
        self._logical += len(data)

    def _zeros_to(self, offset: int) -> None:
        for chunk in zeros(offset - self._logical):
            self._feed(chunk)

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        view = memoryview(data)
        while view and self._index < len(self._extents):
            offset, length = self._extents[self._index]
            if self._into == 0:
                self._zeros_to(offset)
            take = min(len(view), length - self._into)
            self._feed(view[:take])
            view = view[take:]
            self._into += take
            if self._into == length:
                self._index, self._into = self._index + 1, 0
        return data

    def finish(self) -> str:
        """The logical MD5 (hex), once every stored byte was read."""
        self._zeros_to(self.size)
        return self._md5.hexdigest()


def iter_logical(
    extents: list[list[int]], size: int, start: int, end: int, iter_stored: Callable[[int, int], Iterator[bytes]]
) -> Iterator[bytes]:
    """Logical bytes ``[start, end)``: zeros for holes, ``iter_stored(lo, hi)`` (stored offsets) for data."""
    pos = start
    stored = 0
    for offset, length in extents:
        if offset + length <= pos:
            stored += length
            continue
        if offset >= end:
            break
        if pos < offset:
            yield from zeros(offset - pos)
            pos = offset
        hi = min(end, offset + length)
        yield from iter_stored(stored + pos - offset, stored + hi - offset)
        pos = hi
        stored += length
    if pos < end:
        yield from zeros(end - pos)


def read_logical(
    extents: list[list[int]], size: int, offset: int, length: int, read_stored: Callable[[int, int], bytes]
) -> bytes:
    """Up to ``length`` logical bytes at ``offset``; ``read_stored(offset, length)`` reads stored bytes."""
    end = min(offset + length, size)
    if offset >= end:
        return b""

    def stored_chunks(lo: int, hi: int) -> Iterator[bytes]:
        yield read_stored(lo, hi - lo)

    return b"".join(iter_logical(extents, size, offset, end, stored_chunks))


def piece_of_sparse(
    extents: list[list[int]], size: int, offset: int, read_piece: Callable[[int], tuple[int, bytes]]
) -> tuple[int, bytes]:
    """``(start, bytes)`` around logical ``offset`` (for ObjectReader.read_piece).

    The zeros of the hole holding it (up to 1 MiB), or ``read_piece(stored
    offset)``'s bytes cut to the extent holding it, at logical offsets.
    """
    stored = 0
    for start, length in extents:
        if offset < start:
            return offset, _ZEROS[: min(start - offset, len(_ZEROS))]
        if offset < start + length:
            piece_start, data = read_piece(stored + offset - start)
            lo = max(stored, piece_start)
            hi = min(stored + length, piece_start + len(data))
            return start + lo - stored, data[lo - piece_start : hi - piece_start]
        stored += length
    return offset, _ZEROS[: min(size - offset, len(_ZEROS))]
