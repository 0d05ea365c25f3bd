"""Bounded-memory helpers for passes over the whole store (scrub, rebuild-index).

- :class:`SortedSpill`: a set of ids too large for memory, kept as sorted
  chunk files on disk and read back as one sorted stream (``heapq.merge``).
  At most ``chunk`` ids are in memory; chunks are merged level by level so
  no more than ``_FAN_IN`` files are open per reader.
- :class:`SortedMembership`: answers "is x in the stream?" for queries in
  ascending order (a merge join), holding one id at a time.
- :func:`sorted_fragments`: the fragment files of a drive in blob id order,
  one leaf directory in memory at a time.

Memory use of each is independent of the number of objects in the store.
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

_FAN_IN = 16
DEFAULT_CHUNK = 200_000


class SortedSpill:
    """An on-disk set of strings (no newlines), written in sorted chunks under ``directory``.

    Chunks already in ``directory`` (a pass resumed after a kill) are part of
    the set; :meth:`flush` makes everything added so far durable on return.
    """

    def __init__(self, directory: Path, *, chunk: int = DEFAULT_CHUNK) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.chunk = chunk
        self._pending: list[str] = []
        for stale in directory.glob("*.tmp"):
            stale.unlink()

    def add(self, item: str) -> None:
        self._pending.append(item)
        if len(self._pending) >= self.chunk:
            self.flush()

    def update(self, items: Iterable[str]) -> None:
        for item in items:
            self.add(item)

    def _chunks(self, level: int | None = None) -> list[Path]:
        pattern = "L*-*.ids" if level is None else f"L{level}-*.ids"
        return sorted(self.directory.glob(pattern))

    def flush(self) -> None:
        """Write what was added since the last flush as a sorted chunk (durably), merging full levels."""
        if self._pending:
            self._pending.sort()
            self._write(0, iter(self._pending))
            self._pending = []
        level = 0
        while len(self._chunks(level)) >= _FAN_IN:
            chunks = self._chunks(level)
            self._write(level + 1, _dedup(heapq.merge(*(_read_ids(c) for c in chunks))))
            for chunk in chunks:
                chunk.unlink()
            level += 1

    def _write(self, level: int, items: Iterator[str]) -> None:
        name = f"L{level}-{time.time_ns():020d}-{os.getpid()}.ids"
        tmp = self.directory / (name + ".tmp")
        with open(tmp, "w") as f:
            for item in items:
                f.write(item)
                f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.directory / name)

    def __iter__(self) -> Iterator[str]:
        """Every item, sorted, once (flushed chunks and what is pending)."""
        streams: list[Iterable[str]] = [_read_ids(c) for c in self._chunks()]
        streams.append(sorted(self._pending))
        return _dedup(heapq.merge(*streams))


def _read_ids(path: Path) -> Iterator[str]:
    with open(path) as f:
        for line in f:
            yield line[:-1]


def _dedup(items: Iterable[str]) -> Iterator[str]:
    last = None
    for item in items:
        if item != last:
            yield item
            last = item


class SortedMembership:
    """Membership in a sorted stream for ascending queries."""

    def __init__(self, items: Iterable[str]) -> None:
        self._items = iter(items)
        self._current: str | None = next(self._items, None)

    def __contains__(self, item: str) -> bool:
        while self._current is not None and self._current < item:
            self._current = next(self._items, None)
        return self._current == item


def sorted_fragments(blobs: Path, *, after: str = "", onerror=None) -> Iterator[tuple[str, str, Path]]:
    """``(top-level fan-out dir, file name, directory)`` for every file under a drive's ``blobs/``.

    Files come in name order, which is blob id order (the fan-out
    directories are the id's first characters); only top-level directories
    after ``after`` are walked (a resumed pass).
    """

    def listing(path: Path) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except OSError as exc:
            if onerror is not None:
                onerror(exc)
            return []

    for top in listing(blobs):
        if top <= after:
            continue
        for sub in listing(blobs / top):
            leaf = blobs / top / sub
            if not leaf.is_dir():
                continue
            for name in listing(leaf):
                yield top, name, leaf
