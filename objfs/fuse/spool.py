"""Spool files: the pending content of files open for write on the mount.

One :class:`Spool` per inode open for write, shared by every handle open on
that inode, is an engine-owned spool file (``store.new_spool_file("fuse")``,
under ``STORE/spool/fuse/``, named after this process): if the mount dies,
the next opening of the store sweeps it (``store.sweep_spool``). Writes land in it (random writes,
overwrites, appends, truncation); nothing reaches the store until
:meth:`Spool.commit` stores the whole file as the new object with
``store.put_object`` -- called on flush (what ``close()`` returns), fsync and
the last release. So other fronts see either the previous object or the new
one, never a partial file (close-to-open consistency, as NFS), and a crash
of the mount loses only what no close or fsync acknowledged.

The spool of an existing object is filled lazily (:meth:`Spool.load`) on
the first write that needs the old bytes; ``O_TRUNC`` never reads them.
Files larger than RAM stream through the spool: memory use is one segment.

Holes cost nothing: a commit finds the spool's data with SEEK_DATA/SEEK_HOLE,
treats aligned all-zero blocks (:mod:`.holes`) as holes too
(zeros written explicitly, as glibc's posix_fallocate does on a filesystem
without fallocate), and stores only the data ranges as a sparse version
(``extents``, see :mod:`objfs.store.sparse`). Loading a sparse version
leaves its holes (and any zero block) unwritten in the spool.
fallocate's punch and zero-range punch the spool file itself
(:meth:`Spool.zero`), so the range is a hole at the commit; an allocation
only moves the size (:meth:`Spool.allocate`).

A spool is only ever deleted when its content is committed and every handle
is closed, or when its inode is unlinked and forgotten (the file is gone).
A failed commit keeps the spool, so a later flush, fsync or close retries.

A file written sequentially from its first byte (a new file, or one cut to
nothing) is also *streamed*: a put of its bytes runs in a thread of its own
while they are written (:class:`_Stream`), so the erasure coding and the
fragment writes overlap the writing and the commit only ends the put (the
last segment, the syncs, the index commit). The spool file still gets every
byte: any write elsewhere, a truncation, a rename or an xattr change while
the file is open abandons the stream (its put is discarded, nothing of it
is visible) and the commit stores the spool file as above.
"""

from __future__ import annotations

import collections
import os
import stat
import threading
import time
from typing import Any

import trio

from objfs.store import ObjectInfo, Principal, Store

from .holes import ExtentStream, data_extents, is_zero, punch_hole

#: A run of zeros this long written into a stream abandons it: the spool commit makes it a hole.
STREAM_ZERO_RUN = 1 << 20
#: Bytes a stream holds for its put before writes wait for it (memory per streamed file).
STREAM_BUFFER = 4 << 20
#: Files streamed at once; more are spooled only (each stream is a thread).
MAX_STREAMS = 8
_streams = threading.BoundedSemaphore(MAX_STREAMS)


class StreamAbandoned(Exception):
    """The stream's put was abandoned: the spool file is committed instead."""


class _Stream:
    """A put of a file's bytes that runs while they are written (sequentially, from 0).

    Writes hand their bytes over with :meth:`offer` (never blocks: the
    mount's event loop calls it) or :meth:`feed` (blocks while the put is
    :data:`STREAM_BUFFER` behind: a worker thread calls it). The put reads
    them through :meth:`read`. :meth:`finish` ends the body and returns the
    put's result; :meth:`abandon` makes the put fail (and discard what it wrote).
    """

    def __init__(self, store: Store, bucket: str, key: str, principal: Principal) -> None:
        self.bucket, self.key, self.principal = bucket, key, principal
        self.pos = 0  # bytes handed over
        self.order = trio.Lock()  # writes hand their bytes over in the order they came
        #: The new version's POSIX attributes: filled in by finish, read by the put after the body ends.
        self.posix: dict[str, int] = {}
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._appended = 0
        self._eof = False
        self._abandoned = False
        self._done = False
        self._result: ObjectInfo | None = None
        self._error: BaseException | None = None
        #: Zeros handed over since the last other byte (see STREAM_ZERO_RUN).
        self.zeros = 0
        self._thread = threading.Thread(target=self._put, args=(store,), name="objfs-fuse-stream", daemon=True)
        self._thread.start()

    def _put(self, store: Store) -> None:
        try:
            self._result = store.put_object(
                self.bucket,
                self.key,
                self,
                posix=self.posix,
                keep_attributes=True,
                xattr_changes={},
                principal=self.principal,
            )
        except BaseException as exc:  # handed to finish()
            self._error = exc
        finally:
            _streams.release()
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def read(self, size: int = -1) -> bytes:
        """The put's body: what was handed over, b"" at the end; raises StreamAbandoned."""
        with self._cond:
            # Whole segments where the writer is ahead: fewer, larger pieces for the encoder.
            want = STREAM_BUFFER if size < 0 else min(size, STREAM_BUFFER)  # never more than feed() lets in
            while self._queued < want and not self._eof and not self._abandoned:
                self._cond.wait()
            if self._abandoned:
                raise StreamAbandoned("the file was not written sequentially")
            out = bytearray()
            while self._chunks and (size < 0 or len(out) < size):
                chunk = self._chunks.popleft()
                if size >= 0 and len(out) + len(chunk) > size:
                    cut = size - len(out)
                    self._chunks.appendleft(chunk[cut:])
                    chunk = chunk[:cut]
                out += chunk
            self._queued -= len(out)
            self._cond.notify_all()
            return bytes(out)

    def zero_run(self, data: bytes) -> int:
        """Zeros handed over since the last other byte, counting ``data`` (about to be handed over)."""
        self.zeros = self.zeros + len(data) if is_zero(data) else 0
        return self.zeros

    def offer(self, data: bytes) -> bool:
        """Hand ``data`` over unless the put is behind (False: call :meth:`feed` from a thread)."""
        with self._cond:
            if self._queued >= STREAM_BUFFER and not (self._abandoned or self._done):
                return False
            self._append(data)
            return True

    def feed(self, data: bytes) -> None:
        """Hand ``data`` over, waiting while the put is behind (blocking)."""
        with self._cond:
            while self._queued >= STREAM_BUFFER and not (self._abandoned or self._done):
                self._cond.wait()
            self._append(data)

    def _append(self, data: bytes) -> None:
        if not (self._abandoned or self._done):
            self._chunks.append(bytes(data))
            self._queued += len(data)
            self._appended += len(data)
            self._cond.notify_all()

    def finish(self, posix: dict[str, int], length: int) -> ObjectInfo:
        """End the body at ``length`` bytes and wait for the put (blocking): durable when it returns.

        Raises what the put raised, StreamAbandoned when the body cannot be
        exactly those bytes (the caller commits the spool file instead).
        """
        self.posix.update(posix)
        with self._cond:
            # A write handed over but still waiting in feed() belongs to the body.
            while self._appended < length and not (self._abandoned or self._done):
                self._cond.wait()
            if self._appended != length and not self._done:
                self._abandoned = True
            self._eof = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def abandon(self) -> None:
        """Make the put fail and discard its fragments; returns at once."""
        with self._cond:
            self._abandoned = True
            self._chunks.clear()
            self._queued = 0
            self._cond.notify_all()


class Spool:
    """Pending content and attributes of one inode open for write."""

    def __init__(self, store: Store, ino: int, *, base: ObjectInfo | None, posix: dict[str, int]) -> None:
        """Create the spool file (OSError if the spool filesystem refuses: ENOSPC, EMFILE, ...)."""
        self.fd, self.path = store.new_spool_file("fuse", f"{ino}-")
        self.closed = False
        #: The committed object this spool starts from; None for a new file.
        self.base = base
        #: Whether the spool file holds the file's bytes (False until load() for an existing object).
        self.loaded = base is None
        self.size = base.size if base is not None else 0
        #: Content or attributes changed since the last successful commit.
        self.dirty = base is None
        #: A failed commit was reported to a caller for the current content.
        self.failed = False
        self.posix = dict(posix)
        #: xattr changes made while the file exists only here (a None value removes one).
        self.xattrs: dict[str, bytes | None] = {}
        self.handles = 0
        # Serialises load and commit: a commit never reads a half-loaded spool.
        self.lock = trio.Lock()
        #: The put streaming this file's bytes while they are written, if any.
        self.stream: _Stream | None = None

    # -- content ---------------------------------------------------------------

    def load(self, store: Store) -> None:
        """Copy the base object into the spool (blocking; run in a worker thread)."""
        if self.loaded:
            return
        assert self.base is not None
        pos = 0
        with store.open_record(self.base.record) as reader:
            for chunk in reader.iter_range(0, self.base.size):
                if chunk.count(0) == len(chunk):  # a hole (or zeros) stays a hole in the spool
                    pos += len(chunk)
                    continue
                view = memoryview(chunk)
                while view:
                    n = os.pwrite(self.fd, view, pos)
                    view, pos = view[n:], pos + n
        os.ftruncate(self.fd, self.base.size)
        self.loaded = True

    def blocks(self) -> int:
        """512-byte blocks the content uses (st_blocks): fewer than its size for a sparse file."""
        full = (self.size + 511) // 512
        if self.base is not None and (not self.dirty or not self.loaded):
            return (self.base.stored_size + 511) // 512  # the committed version's content, zeros elided
        return min(full, os.fstat(self.fd).st_blocks)

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, min(size, max(0, self.size - offset)), offset)

    def write(self, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` (the spool must be loaded); returns the count written."""
        view = memoryview(data)
        pos = offset
        while view:
            n = os.pwrite(self.fd, view, pos)
            view, pos = view[n:], pos + n
        self.size = max(self.size, pos)
        self._touch()
        return len(data)

    def start_stream(self, store: Store, bucket: str, key: str, principal: Principal) -> None:
        """Stream the file into a put from here on, if it is empty and streams are free."""
        if self.stream is None and self.loaded and self.size == 0 and not self.xattrs and _streams.acquire(blocking=False):
            self.stream = _Stream(store, bucket, key, principal)

    def abandon_stream(self) -> None:
        if self.stream is not None:
            self.stream.abandon()
            self.stream = None

    def truncate(self, size: int) -> None:
        """Cut or extend to ``size``; a cut to 0 needs no load."""
        self.abandon_stream()
        if size == 0:
            self.loaded = True
        os.ftruncate(self.fd, size)
        self.size = size
        self._touch()

    def allocate(self, offset: int, length: int, *, keep_size: bool) -> None:
        """fallocate(2) mode 0 (or FALLOC_FL_KEEP_SIZE): the range reads as zeros where it held nothing.

        Reserves no space (see :meth:`WriteOps.fallocate`): the range is a
        hole until written. Extends the file to ``offset+length`` unless
        ``keep_size``; changes nothing otherwise (no new version at the
        commit). The spool must be loaded when the size grows.
        """
        end = offset + length
        if not keep_size and end > self.size:
            self.truncate(end)

    def zero(self, offset: int, length: int, *, keep_size: bool) -> None:
        """FALLOC_FL_PUNCH_HOLE or FALLOC_FL_ZERO_RANGE: the range reads as zeros and costs nothing at the commit.

        The spool must be loaded. Beyond the end of the file, only a
        ``keep_size=False`` range changes anything (the file grows, as
        :meth:`allocate`).
        """
        end = offset + length
        if offset < self.size:
            self.abandon_stream()  # bytes the put may have had are now zeros
            punch_hole(self.fd, offset, min(end, self.size) - offset)
            self._touch()
        if not keep_size and end > self.size:
            self.truncate(end)

    def _touch(self) -> None:
        now = time.time_ns()
        self.posix["mtime_ns"] = now
        self.posix["ctime_ns"] = now
        self.dirty = True
        self.failed = False

    # -- commit ------------------------------------------------------------------

    def commit(self, store: Store, bucket: str, key: str, length: int, *, principal: Principal | None = None) -> ObjectInfo:
        """Store the first ``length`` bytes as ``bucket/key`` (blocking; worker thread).

        Durable when it returns (see ``Store.put_object``); the write is
        audited in the name of ``principal``. A bucket's default retention
        applies to the new version as to any other put. The S3 metadata,
        content type and xattrs of the object being replaced are kept: an
        edit through the mount changes the bytes, not what other fronts said
        about the object.
        """
        posix = dict(self.posix)
        posix["mode"] = stat.S_IFREG | stat.S_IMODE(posix.get("mode", 0o644))
        stream, self.stream = self.stream, None
        if stream is not None:
            if (stream.bucket, stream.key, stream.principal, stream.pos) == (bucket, key, principal, length) and not self.xattrs:
                try:
                    info = stream.finish(posix, length)
                    self.base = info
                    return info
                except StreamAbandoned:
                    pass  # the spool file holds every byte
            else:
                stream.abandon()
        # The engine keeps the attributes current at the commit (another front may change them meanwhile).
        extents = data_extents(self.fd, length)
        info = store.put_object(
            bucket,
            key,
            ExtentStream(self.fd, extents),
            length=length,
            extents=extents,
            posix=posix,
            keep_attributes=True,
            xattr_changes=dict(self.xattrs),
            principal=principal,
        )
        self.base = info
        self.xattrs.clear()
        return info

    def close(self) -> None:
        """Delete the spool file: its content is committed or no longer wanted."""
        if self.closed:
            return
        self.closed = True
        self.abandon_stream()
        try:
            os.close(self.fd)
        except OSError:
            pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def attrs_of(posix: dict[str, Any]) -> dict[str, int]:
    """The POSIX attributes the mount persists, from a record's ``posix`` (defaults filled)."""
    now = time.time_ns()
    mtime = int(posix.get("mtime_ns", now))
    return {
        "mode": int(posix.get("mode", stat.S_IFREG | 0o644)),
        "uid": int(posix.get("uid", 0)),
        "gid": int(posix.get("gid", 0)),
        "mtime_ns": mtime,
        "atime_ns": int(posix.get("atime_ns", mtime)),
        "ctime_ns": int(posix.get("ctime_ns", mtime)),
    }
