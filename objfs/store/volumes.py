"""Volumes: small fragments packed into per-drive append-only files.

A small blob's fragment is not a file of its own: it is appended, as an
*entry*, to a volume file on its drive (the Haystack / SeaweedFS layout).
A store of millions of small DICOM slices then costs one inode per drive
per volume instead of one per fragment, no per-object directory entries
and no fan-out directories, and concurrent writers share one
``fdatasync`` per drive per batch (group commit) instead of paying one
each plus directory syncs.

Layout on a drive::

    volumes/<volume id>.vol = HEADER | entry | entry | ...
    entry = ENTRY(magic, blob id, fragment index, payload length, crc) | payload

A *record volume* (``volumes/<volume id>.rec``, same layout) holds record
entries (magic ``OBJR``: the id is an object id, the payload the image of a
``<id>.meta`` file, see :func:`.fragments.meta_image`). Records are what a
retired version's tombstone is written as (:mod:`.gc`): concurrent
retirements on a drive share one append-only file and its group
``fdatasync``, where a ``<id>.meta`` file cost a file, an fsync, a rename
and a directory fsync per drive. ``rebuild-index`` reads them like ``.meta``
files (newest ``gen`` wins). They live apart from the fragments because
they are never punched: a data volume whose fragments were all collected
is still removed, while a record volume keeps ~250 bytes per tombstone.

The payload is byte for byte what the fragment file would hold (frames
with their CRCs, the footer, the tail), so every verification, repair and
``rebuild-index`` rule of :mod:`.fragments` applies unchanged; a blob's
descriptor says where its fragments are (``vols``: per fragment index,
``[volume id, payload offset, payload length]`` or None for a fragment
file).

Guarantees:

- Only the process that created a volume appends to it (each process has
  its own active volume per drive), entries never move, and an entry is
  durable once :meth:`Volume.sync_through` past its end returned: a blob
  is acknowledged only after that, as with fragment files.
- A torn tail (a crash mid-append) is an entry without a valid footer:
  readers reject it by its CRCs, the scan skips it, and the volume is never
  appended to again (a restarted process opens a new volume).
- Space of dead entries is returned with ``FALLOC_FL_PUNCH_HOLE`` by the
  collector, under the same rules as unlinking a fragment file (a dead
  entry then reads as zeros); a volume holding locked data is made
  immutable (then its dead entries keep their space until the lock ends and
  the flag is cleared).
- A volume is created under a ``.new`` name, locked (shared ``flock``) and
  only then renamed to its ``.vol`` name; its writer keeps the lock until it
  closes the volume or dies. A volume the writer retires (full, broken, or
  about to be made immutable) is closed as soon as the last append to it has
  been synced, so a long-lived process holds one descriptor per drive. A
  volume is removed (:func:`unlink_if_dead`) only under an exclusive lock,
  so never while a live process may append.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import secrets
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .drives import BLOBS, VOLUMES, fsync_dir

try:
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover - a dependency; zlib gives the same values
    from zlib import crc32

SUFFIX = ".vol"
RECORD_SUFFIX = ".rec"  # a record volume (tombstones)
_NEW_SUFFIX = ".new"  # a volume being created (not yet locked and named)
FILE_MAGIC = b"OBJFSVL1"
_FILE_HEADER = struct.Struct("<8s16s")  # magic, volume id
ENTRY_MAGIC = b"OBJV"
RECORD_MAGIC = b"OBJR"
_ANY_MAGIC = re.compile(b"OBJ[VR]")
_ENTRY = struct.Struct("<4s16sB3xQ")  # magic, blob id, fragment index, payload length
_ENTRY_CRC = struct.Struct("<I")
ENTRY_BYTES = _ENTRY.size + _ENTRY_CRC.size
#: A volume stops taking entries past this size (a new one is started).
VOLUME_BYTES = 1 << 30
_SCAN_CHUNK = 1 << 20

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_BLOCK = 4096


def volume_dir(drive_path: Path) -> Path:
    return drive_path / VOLUMES


def volume_path(drive_path: Path, volume_id: str, suffix: str = SUFFIX) -> Path:
    return drive_path / VOLUMES / f"{volume_id}{suffix}"


def entry_header(blob_id: str, index: int, length: int, magic: bytes = ENTRY_MAGIC) -> bytes:
    head = _ENTRY.pack(magic, bytes.fromhex(blob_id), index, length)
    return head + _ENTRY_CRC.pack(crc32(head))


def _parse_header(raw: bytes) -> tuple[bytes, str, int, int] | None:
    """``(magic, id, index, payload length)`` of a valid fragment or record entry header, else None."""
    if len(raw) < ENTRY_BYTES or raw[:4] not in (ENTRY_MAGIC, RECORD_MAGIC):
        return None
    head = raw[: _ENTRY.size]
    if crc32(head) != _ENTRY_CRC.unpack_from(raw, _ENTRY.size)[0]:
        return None
    magic, blob, index, length = _ENTRY.unpack(head)
    return magic, blob.hex(), index, length


def parse_entry_header(raw: bytes) -> tuple[str, int, int] | None:
    """``(blob id, fragment index, payload length)`` of a valid fragment entry header, else None."""
    parsed = _parse_header(raw)
    if parsed is None or parsed[0] != ENTRY_MAGIC:
        return None
    return parsed[1:]


class Volume:
    """This process's active volume on one drive: appends and group syncs (thread-safe)."""

    def __init__(self, drive_path: Path, limit: int = VOLUME_BYTES, suffix: str = SUFFIX) -> None:
        self.volume_id = secrets.token_hex(16)
        self.path = volume_path(drive_path, self.volume_id, suffix)
        self.limit = limit
        directory = self.path.parent
        fresh = not directory.is_dir()
        if fresh:
            # Only inside a drive's layout: an unmounted drive's empty mount point must not fill the root filesystem.
            if not (drive_path / BLOBS).is_dir():
                raise FileNotFoundError(errno.ENOENT, "the drive's layout is gone", str(drive_path))
            directory.mkdir(exist_ok=True)
        # Created under a name no pass looks at and locked before it is named: from its first
        # moment under its name, its shared lock says "a live process may append here"
        # (the collector never removes a volume it cannot lock exclusively).
        fresh_path = directory / f"{self.volume_id}{_NEW_SUFFIX}"
        self.fd = os.open(fresh_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH)
            os.write(self.fd, _FILE_HEADER.pack(FILE_MAGIC, bytes.fromhex(self.volume_id)))
            os.fsync(self.fd)
            os.rename(fresh_path, self.path)
            fsync_dir(directory)  # the volume's name, once; its entries need only fdatasync
            if fresh:
                fsync_dir(drive_path)
        except BaseException:
            os.close(self.fd)
            raise
        self.size = _FILE_HEADER.size
        self.synced = self.size
        self._lock = threading.Lock()
        self._synced = threading.Condition()
        self._syncing = False
        self.broken: OSError | None = None
        # Appenders between their append and their sync; a retired volume is closed by the last of them,
        # so a long-lived process holds one descriptor (and shared lock) per drive, not one per volume ever used.
        self._users = 0
        self._retired = False
        self._closed = False

    def acquire(self) -> bool:
        """Hold the volume open for one append and its sync; False once it is retired and closed."""
        with self._lock:
            if self._closed:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        """End a hold taken by :meth:`acquire`; the last hold on a retired volume closes it."""
        with self._lock:
            self._users -= 1
            if self._retired and self._users == 0:
                self._close()

    def retire(self) -> None:
        """Take no more holds; close now if nobody holds the volume, else when the last hold ends."""
        with self._lock:
            self._retired = True
            if self._users == 0:
                self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                os.close(self.fd)
            except OSError:
                pass

    def append(self, blob_id: str, index: int, payload: bytes | bytearray | memoryview, magic: bytes = ENTRY_MAGIC) -> int | None:
        """Write one entry (a fragment; a record with ``RECORD_MAGIC``); the payload's offset, or None when full.

        The entry is not durable until :meth:`sync_through` its end returns.
        Writes are serialized: a sync covers exactly the entries written
        before it started. None: the volume is full (start another).
        """
        with self._lock:
            if self.broken is not None:
                raise self.broken
            if self.size + ENTRY_BYTES + len(payload) > self.limit and self.size > _FILE_HEADER.size:
                return None
            start = self.size
            header = entry_header(blob_id, index, len(payload), magic)
            try:
                written = os.pwritev(self.fd, [header, payload], start)
                if written != len(header) + len(payload):
                    raise OSError(errno.ENOSPC, "short write to a volume", str(self.path))
            except OSError as exc:
                # The next entry overwrites the torn one; an error that persists breaks the volume.
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EPERM, errno.EACCES):
                    self.broken = exc
                raise
            self.size = start + len(header) + len(payload)
            return start + len(header)

    def sync_through(self, end: int) -> None:
        """Return once every byte before ``end`` is durable (one fdatasync serves every waiting writer)."""
        with self._synced:
            while True:
                if self.broken is not None:
                    raise self.broken
                if self.synced >= end:
                    return
                if not self._syncing:
                    break
                self._synced.wait()
            self._syncing = True
        with self._lock:
            target = self.size  # entries written so far: each write finished under this lock
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            # A failed fdatasync may have dropped dirty pages: nothing after the last good sync is trusted.
            self.broken = exc
            raise
        finally:
            with self._synced:
                self._syncing = False
                if self.broken is None:
                    self.synced = max(self.synced, target)
                self._synced.notify_all()


class VolumeSet:
    """The active volumes of this process, one per drive and kind (fragments; records) (thread-safe)."""

    def __init__(self, limit: int = VOLUME_BYTES) -> None:
        self.limit = limit
        self._active: dict[tuple[Path, str], Volume] = {}
        self._lock = threading.Lock()

    def append(
        self, drive_path: Path, blob_id: str, index: int, payload: bytes | bytearray, magic: bytes = ENTRY_MAGIC
    ) -> tuple[Volume, int]:
        """Append an entry to the drive's active volume (starting one when needed): ``(volume, payload offset)``.

        The caller holds the returned volume open and must :meth:`Volume.release`
        it once its :meth:`Volume.sync_through` is done.
        """
        suffix = RECORD_SUFFIX if magic == RECORD_MAGIC else SUFFIX
        for _attempt in range(4):
            volume = self._current(drive_path, suffix)
            if not volume.acquire():  # retired and closed since we looked it up
                continue
            try:
                offset = volume.append(blob_id, index, payload, magic)
            except OSError as exc:
                volume.release()
                if exc.errno in (errno.EPERM, errno.EACCES):  # made immutable (it holds locked data): move on
                    self.retire(volume)
                    continue
                if volume.broken is not None:
                    self.retire(volume)
                raise
            if offset is not None:
                return volume, offset
            volume.release()
            self.retire(volume)
        raise OSError(errno.EIO, "no volume takes this entry", str(drive_path))

    def _current(self, drive_path: Path, suffix: str) -> Volume:
        with self._lock:
            volume = self._active.get((drive_path, suffix))
            if volume is None or volume.broken is not None:
                volume = self._active[(drive_path, suffix)] = Volume(drive_path, self.limit, suffix)
            return volume

    def retire(self, volume: Volume) -> None:
        """Take no more entries into ``volume`` (full, broken or immutable); it closes once its pending syncs end."""
        with self._lock:
            for key, active in list(self._active.items()):
                if active is volume:
                    del self._active[key]
        volume.retire()

    def active_paths(self) -> set[Path]:
        with self._lock:
            return {v.path for v in self._active.values()}

    def seal(self, path: Path) -> None:
        """Stop appending to the volume at ``path`` if it is one of ours (before it is made immutable)."""
        with self._lock:
            sealed = [v for v in self._active.values() if v.path == path]
        for volume in sealed:
            self.retire(volume)

    def close(self) -> None:
        """Retire every active volume (each closes when its last pending sync ends)."""
        with self._lock:
            volumes, self._active = list(self._active.values()), {}
        for volume in volumes:
            volume.retire()


@dataclass(frozen=True)
class Entry:
    """One entry found by :func:`scan`."""

    blob_id: str
    index: int
    offset: int  # of the payload
    length: int


def scan(path: Path) -> Iterator[Entry]:
    """The fragment entries of a volume in file order, skipping records and punched or torn stretches.

    A stretch that is not a valid entry header (a punched hole reads as
    zeros; a torn tail) is skipped by searching for the next valid header;
    whether an entry's payload is whole is for its footer to tell.
    """
    for magic, entry in _scan_all(path):
        if magic == ENTRY_MAGIC:
            yield entry


def scan_records(path: Path) -> Iterator[Entry]:
    """The record entries (packed ``.meta`` images: tombstones) of a volume in file order.

    ``blob_id`` is the record's object id; whether the payload is whole is
    for :func:`read_record` (its CRC) to tell.
    """
    for magic, entry in _scan_all(path):
        if magic == RECORD_MAGIC:
            yield entry


def scan_entries(path: Path) -> Iterator[tuple[bool, Entry]]:
    """Every entry of a volume in file order: ``(is_record, entry)`` (one pass for both kinds)."""
    for magic, entry in _scan_all(path):
        yield magic == RECORD_MAGIC, entry


def _scan_all(path: Path) -> Iterator[tuple[bytes, Entry]]:
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_FILE_HEADER.size)
        if len(head) < _FILE_HEADER.size or head[:8] != FILE_MAGIC:
            return
        pos = _FILE_HEADER.size
        while pos + ENTRY_BYTES <= size:
            raw = os.pread(f.fileno(), ENTRY_BYTES, pos)
            parsed = _parse_header(raw)
            if parsed is not None and pos + ENTRY_BYTES + parsed[3] <= size:
                magic, blob_id, index, length = parsed
                yield magic, Entry(blob_id, index, pos + ENTRY_BYTES, length)
                pos += ENTRY_BYTES + length
                continue
            pos = _next_header(f.fileno(), pos + 1, size)


def read_record(path: Path, offset: int, length: int) -> bytes:
    """The payload of the record entry at ``offset`` (its header checked: b"" if none is there)."""
    with open(path, "rb", buffering=0) as f:
        raw = os.pread(f.fileno(), ENTRY_BYTES + length, offset - ENTRY_BYTES)
    parsed = _parse_header(raw)
    if parsed is None or parsed[0] != RECORD_MAGIC or parsed[3] != length:
        return b""
    return raw[ENTRY_BYTES:]


def _next_header(fd: int, pos: int, size: int) -> int:
    """The offset of the next valid entry header (either kind) at or after ``pos`` (``size`` when none)."""
    while pos < size:
        chunk = os.pread(fd, _SCAN_CHUNK + ENTRY_BYTES, pos)
        for found in _ANY_MAGIC.finditer(chunk):
            at = found.start()
            if at > _SCAN_CHUNK:
                break
            if _parse_header(chunk[at : at + ENTRY_BYTES]) is not None:
                return pos + at
        pos += _SCAN_CHUNK
    return size


def list_volumes(drive_path: Path, suffix: str = SUFFIX) -> list[Path]:
    """The data volumes of a drive (``suffix=RECORD_SUFFIX``: its record volumes)."""
    try:
        names = os.listdir(volume_dir(drive_path))
    except FileNotFoundError:
        return []
    return sorted(volume_dir(drive_path) / n for n in names if n.endswith(suffix))


_libc = None


def _fallocate():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return _libc.fallocate


def punch(path: Path, offset: int, length: int) -> None:
    """Return the space of an entry's payload ``[offset, offset+length)`` and its header to the filesystem.

    Whole blocks are freed; the entry's bytes in blocks it shares with its
    neighbours are overwritten with zeros, so a dead entry reads as zeros
    from its header to its end (a scan skips it; :func:`all_dead` can tell
    a volume holds nothing). Idempotent. Raises OSError (EPERM on an
    immutable volume; EOPNOTSUPP where the filesystem cannot punch, before
    anything changed).
    """
    start = offset - ENTRY_BYTES
    end = offset + length
    first = -(-start // _BLOCK) * _BLOCK
    last = (end // _BLOCK) * _BLOCK
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if last > first:
            if _fallocate()(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, first, last - first) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(path))
            if start < first:
                os.pwrite(fd, bytes(first - start), start)
            if last < end:
                os.pwrite(fd, bytes(end - last), last)
        else:  # within shared blocks: only our own bytes, never a neighbour's
            os.pwrite(fd, bytes(end - start), start)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def entry_at(path: Path, offset: int) -> tuple[str, int, int] | None:
    """The valid entry header in front of the payload at ``offset`` (see :func:`parse_entry_header`), else None."""
    with open(path, "rb", buffering=0) as f:
        return parse_entry_header(os.pread(f.fileno(), ENTRY_BYTES, offset - ENTRY_BYTES))


def punch_entry(path: Path, blob_id: str, index: int, offset: int, length: int) -> bool:
    """Punch fragment ``index`` of ``blob_id`` at ``offset``; False (nothing done) when a valid header there names another.

    An invalid header is an entry already (or half) punched: punching again is harmless.
    """
    found = entry_at(path, offset)
    if found is not None and found != (blob_id, index, length):
        return False
    punch(path, offset, length)
    return True


def all_dead(path: Path) -> bool:
    """Whether every byte after the volume's file header reads as zero (every entry punched).

    Reads only the stretches that are not holes (``SEEK_DATA``); stops at
    the first byte that is not zero (a live entry, or a torn tail, which
    keeps its volume).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        pos = _FILE_HEADER.size
        while pos < size:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nothing but holes to the end
                    return True
                raise
            hole = min(os.lseek(fd, pos, os.SEEK_HOLE), size)
            while pos < hole:
                chunk = os.pread(fd, min(_SCAN_CHUNK, hole - pos), pos)
                if not chunk:
                    return True
                if chunk.count(0) != len(chunk):
                    return False
                pos += len(chunk)
        return True
    finally:
        os.close(fd)


def unlink_if_dead(path: Path, min_age: float) -> bool:
    """Remove a volume that holds nothing any more; True if removed.

    Only when no live process may still append to it (its creator holds a
    shared lock from before the volume had its name until it exits, so an
    exclusive lock proves it is gone), it was last written at least
    ``min_age`` seconds ago, and every entry is punched (:func:`all_dead`).
    An immutable volume (locked data) refuses the unlink and stays.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive
        info = os.fstat(fd)
        if info.st_nlink == 0 or time.time() - info.st_mtime < min_age or not all_dead(path):
            return False
        try:
            os.unlink(path)
        except PermissionError:
            return False
        return True
    finally:
        os.close(fd)
