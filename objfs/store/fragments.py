"""Fragment files and the small metadata files beside them.

A fragment file holds fragment ``index`` of every segment of one blob::

    frame 0 | frame 1 | ... | frame n-1 | footer | u32 footer_len | u32 crc | MAGIC

Each frame is the fragment bytes followed by their CRC-32s, so every read
is verified: one CRC per :data:`CRC_BLOCK` bytes for blobs written since
store format 4 (their descriptor's ``cb``), so a small read reads and checks
only the blocks it needs; one CRC for the whole frame before. All frames but
the last have the same length, so frame ``i`` starts at ``i * (fsz + the
CRCs' size)``: a range read seeks straight to it. The
footer (msgpack) describes the blob (and, for a single-part object, the
object record as it was written), which makes each drive self-describing for
``rebuild-index``. A file without a valid footer is an interrupted write.

``<object id>.meta`` files carry the newest record of an object after its
name, attributes or retention change without moving data; their
``gen`` orders them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import struct
from pathlib import Path
from typing import Any

import msgpack

from .drives import fsync_dir

try:  # the same CRC-32 as zlib's, an order of magnitude faster (every frame is checked on every read)
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover - the package is a dependency; zlib gives the same values
    from zlib import crc32
from .procs import own_identity


def owner_tag() -> str:
    """``<pid>-<start>``: the owner part of temp file names, so scrub can tell a dead writer's leftovers."""
    me = own_identity()
    return f"{me['pid']}-{me['start']}"


#: Bytes covered by each CRC of a frame, for blobs whose descriptor says ``cb``.
CRC_BLOCK = 32 << 10

MAGIC = b"OBJFSFR1"
META_MAGIC = b"OBJFSMT1"
_TAIL = struct.Struct("<II8s")
_CRC = struct.Struct("<I")
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range():
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return call


_start_writeback = _sync_file_range()


def start_writeback(fd: int) -> None:
    """Start writing a file's dirty pages out without waiting (a hint; the later fdatasync is the guarantee).

    Started before the renames, the writes (and the block allocations the
    filesystem journals for them) of all fragments of a blob are under way
    when their fsyncs begin, so those fsyncs share one journal commit.
    """
    if _start_writeback is not None:
        _start_writeback(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


class FragmentWriter:
    """Writes one fragment file to a temp path, then commits it durably.

    Either :meth:`finish` (one fragment on its own: fsync, rename, fsync the
    directory), or the three steps a blob's writer runs over all its
    fragments at once so their syncs share journal commits: :meth:`seal`,
    :meth:`place`, :meth:`sync` (durable only once the file *and* every
    directory :meth:`place` returned are synced).
    """

    def __init__(self, tmp_path: Path, final_path: Path, root: Path, *, in_memory: bool = False, block: int = 0) -> None:
        """``block``: the blob's CRC block (its descriptor's ``cb``); 0 for one CRC per frame."""
        self.tmp_path = tmp_path
        self.block = block
        self.final_path = final_path
        self.root = root  # the drive's blobs directory: directories are created below it, never it
        # In memory, the fragment may still become a volume entry (:mod:`.volumes`); :meth:`spill` makes it a file.
        self.memory: bytearray | None = bytearray() if in_memory else None
        self._file = None if in_memory else open(tmp_path, "wb", buffering=0)
        self.failed: BaseException | None = None
        self.placed = False  # renamed to final_path (by place), not yet known durable

    def spill(self) -> None:
        """Move the fragment from memory to its temp file (it grew too large for a volume)."""
        if self.memory is None:
            return
        buffered, self.memory = self.memory, None
        if self.failed is not None:
            return
        try:
            self._file = open(self.tmp_path, "wb", buffering=0)
            self._file.write(buffered)
        except OSError as exc:
            self.failed = exc

    def write_frame(self, fragment: bytes) -> None:
        if self.failed is not None:
            return
        crcs = frame_crcs(fragment, self.block)
        if self.memory is not None:
            self.memory += fragment
            self.memory += crcs
            return
        try:
            self._file.write(fragment)
            self._file.write(crcs)
        except OSError as exc:
            self.failed = exc

    def finish(self, footer: dict[str, Any]) -> None:
        """Write the footer, fsync, rename into place and fsync the directory."""
        if self.failed is not None:
            raise self.failed
        body = msgpack.packb(footer, use_bin_type=True)
        self._file.write(body + _TAIL.pack(len(body), crc32(body), MAGIC))
        os.fsync(self._file.fileno())
        self._file.close()
        ensure_dir(self.final_path.parent, self.root)
        os.rename(self.tmp_path, self.final_path)
        fsync_dir(self.final_path.parent)

    def seal(self, footer: dict[str, Any]) -> None:
        """Write the footer and start the writeback; nothing is durable yet."""
        if self.failed is not None:
            raise self.failed
        body = msgpack.packb(footer, use_bin_type=True)
        if self.memory is not None:
            self.memory += body + _TAIL.pack(len(body), crc32(body), MAGIC)
            return
        self._file.write(body + _TAIL.pack(len(body), crc32(body), MAGIC))
        start_writeback(self._file.fileno())

    def place(self) -> list[Path]:
        """Rename the sealed file into place; the directories whose fsync makes that durable.

        The rename comes before the file's sync so that one journal commit
        carries the file, its new directory entry and any new fan-out
        directories: the syncs after it find them committed. Until
        :meth:`sync` and those directory syncs return, the file in place is
        an unacknowledged write like any other (its blob is an open intent;
        a torn one has no valid footer or fails its frame CRCs).
        """
        dirs = make_dirs(self.final_path.parent, self.root)
        os.rename(self.tmp_path, self.final_path)
        self.placed = True
        return [self.final_path.parent, *dirs]

    def sync(self) -> None:
        """Make the file's bytes durable (fdatasync: size and blocks included) and close it."""
        os.fdatasync(self._file.fileno())
        self._file.close()

    def abort(self) -> None:
        if self.memory is not None:
            self.memory = None
            return
        try:
            if self._file is not None:
                self._file.close()
        except OSError:
            pass
        try:
            os.unlink(self.final_path if self.placed else self.tmp_path)
        except OSError:
            pass
        self.placed = False


def crcs_size(length: int, block: int) -> int:
    """Bytes of CRCs after a frame of ``length`` fragment bytes."""
    return _CRC.size * -(-length // block) if block and length else _CRC.size


def frame_crcs(fragment: bytes | memoryview, block: int) -> bytes:
    """The CRCs that follow ``fragment`` in its frame."""
    if not block or not fragment:
        return _CRC.pack(crc32(fragment))
    view = memoryview(fragment)
    values = [crc32(view[i : i + block]) for i in range(0, len(view), block)]
    return struct.pack(f"<{len(values)}I", *values)


def frame_offset(segment: int, fsz: int, block: int = 0) -> int:
    return segment * (fsz + crcs_size(fsz, block))


def ensure_dir(path: Path, root: Path) -> None:
    """Create ``path`` (and missing parents below ``root``) durably: each new entry's parent is fsynced.

    ``root`` itself is never created: when it is gone (a wiped or unmounted
    drive) this raises FileNotFoundError instead of filling whatever
    filesystem lies beneath.
    """
    for parent in make_dirs(path, root):
        fsync_dir(parent)


def make_dirs(path: Path, root: Path) -> list[Path]:
    """Create ``path`` (and missing parents below ``root``, never ``root``); the parents that gained an entry.

    Those parents must be fsynced before a file below ``path`` counts as
    durable (:func:`ensure_dir` does it at once).
    """
    if path.is_dir():
        return []
    if path == root or root not in path.parents:
        raise FileNotFoundError(errno.ENOENT, "the drive's layout is gone", str(root))
    grown = make_dirs(path.parent, root)
    try:
        path.mkdir()
    except FileExistsError:
        return grown
    return [*grown, path.parent]


def read_frame(fd: int, segment: int, fsz: int, length: int, base: int = 0, block: int = 0) -> memoryview | None:
    """Fragment bytes of ``segment`` (one pread), or None if short or a CRC is wrong.

    ``base``: where the fragment starts in the file (a volume entry's payload
    offset); ``block``: the blob's CRC block (0: one CRC for the frame).
    """
    tail = crcs_size(length, block)
    data = os.pread(fd, length + tail, base + frame_offset(segment, fsz, block))
    if len(data) != length + tail:
        return None
    view = memoryview(data)
    body = view[:length]  # no copy: segments are large
    if frame_crcs(body, block) != view[length:]:
        return None
    return body


def read_frame_blocks(
    fd: int, segment: int, fsz: int, length: int, base: int, block: int, lo: int, hi: int, *, nowait: bool = False
) -> tuple[int, bytes] | None:
    """``(start, bytes)``: the CRC blocks of a frame that hold its bytes ``[lo, hi)``, checked; None if damaged.

    Two preads (the blocks, then their CRCs), whatever the frame's size.
    With ``nowait`` the bytes come from the page cache or not at all
    (:class:`BlockingIOError`): a caller on an event loop never waits for a
    disk.
    """
    first, last = lo // block, min(-(-hi // block), -(-length // block))
    start = first * block
    frame = base + frame_offset(segment, fsz, block)
    data = _pread(fd, min(last * block, length) - start, frame + start, nowait)
    crcs = _pread(fd, _CRC.size * (last - first), frame + length + _CRC.size * first, nowait)
    if data is None or crcs is None:
        return None
    view = memoryview(data)
    if frame_crcs(view, block) != crcs:
        return None
    return start, data


def _pread(fd: int, length: int, offset: int, nowait: bool) -> bytes | None:
    """``length`` bytes at ``offset`` (None if the file is shorter); ``nowait``: only from the page cache."""
    if not nowait:
        data = os.pread(fd, length, offset)
        return data if len(data) == length else None
    buffer = bytearray(length)
    got = os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
    if got != length:
        # Short: the end of the file, or only part of the range is cached; the blocking read tells which.
        raise BlockingIOError(errno.EAGAIN, "not all in the page cache")
    return bytes(buffer)


def read_footer(path: Path, base: int = 0, size: int | None = None) -> dict[str, Any] | None:
    """The footer of a complete fragment, or None when it is incomplete or damaged.

    A fragment file by default; a volume entry's payload with ``base`` (its
    offset in the volume) and ``size`` (its length).
    """
    try:
        with open(path, "rb", buffering=0) as f:
            if size is None:
                size = os.fstat(f.fileno()).st_size
            return footer_at(f.fileno(), base, size)
    except OSError:
        return None


def footer_at(fd: int, base: int, size: int) -> dict[str, Any] | None:
    """The footer of the fragment of ``size`` bytes at ``base`` in ``fd`` (None: incomplete or damaged)."""
    if size < _TAIL.size:
        return None
    tail = os.pread(fd, _TAIL.size, base + size - _TAIL.size)
    if len(tail) != _TAIL.size:
        return None
    length, crc, magic = _TAIL.unpack(tail)
    if magic != MAGIC or length > size - _TAIL.size:
        return None
    body = os.pread(fd, length, base + size - _TAIL.size - length)
    if len(body) != length:
        return None
    return _checked(body, crc)


def _checked(body: bytes, crc: int) -> dict[str, Any] | None:
    """The msgpack ``body`` if its CRC-32 is ``crc``, else None (torn or damaged)."""
    if crc32(body) != crc:
        return None
    try:
        return msgpack.unpackb(body, raw=False)
    except ValueError:
        return None


def write_meta(path: Path, tmp_dir: Path, record: dict[str, Any]) -> None:
    """Durably replace ``path`` with ``record`` (temp file, fsync, rename, fsync dir).

    ``path`` lies under the drive (``tmp_dir``'s parent) in ``blobs/`` or
    ``buckets/``; that directory must exist (see :func:`ensure_dir`).
    """
    tmp = tmp_dir / f"{path.name}.{secrets.token_hex(4)}.{owner_tag()}.tmp"
    with open(tmp, "wb") as f:
        f.write(meta_image(record))
        f.flush()
        os.fsync(f.fileno())
    drive_root = tmp_dir.parent
    try:
        layout_root = drive_root / path.relative_to(drive_root).parts[0]
        ensure_dir(path.parent, layout_root)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def meta_image(record: dict[str, Any]) -> bytes:
    """The bytes of a ``.meta`` file holding ``record`` (also the payload of a packed record entry, :mod:`.volumes`)."""
    body = msgpack.packb(record, use_bin_type=True)
    return META_MAGIC + _CRC.pack(crc32(body)) + body


def parse_meta(data: bytes) -> dict[str, Any] | None:
    """The record of a :func:`meta_image`, or None when it is torn or damaged."""
    if not data.startswith(META_MAGIC) or len(data) < 12:
        return None
    return _checked(data[12:], _CRC.unpack(data[8:12])[0])


def read_meta(path: Path) -> dict[str, Any] | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return parse_meta(data)
