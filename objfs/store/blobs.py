"""Blobs: the erasure-coded bytes behind an object (or one multipart part).

:class:`BlobWriter` streams bytes into k+m fragment files on distinct drives
and returns a *descriptor* (a dict kept in the object's record) only once
at least k+1 fragment files are fsynced and renamed into place.
:class:`BlobReader` reads segments back, verifying every frame and
rebuilding from parity when up to m frames of a segment are lost or corrupt.
With a data key (encryption at rest, :mod:`.crypto`) each segment is sealed
with AES-256-GCM before it is erasure coded and opened (authenticated) after
it is decoded; everything between (fragments, parity, healing) is ciphertext.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .codec import get_codec
from .config import BLOCK_CRC_FORMAT
from .crypto import TAG_BYTES, SegmentCipher
from .drives import BLOBS, Drive, fsync_dir, rendezvous_order
from .errors import BadDigest, DataLoss, EncryptionKeyRequired, IncompleteBody, InsufficientDrives, NoSpace
from .fragments import CRC_BLOCK, FragmentWriter, owner_tag, read_frame, read_frame_blocks
from .procs import own_identity
from .volumes import punch, volume_path

if TYPE_CHECKING:
    from .engine import Store


PREFETCH_DEPTH = 3  # segments read ahead by a long sequential read


def new_id() -> str:
    """A fresh object, blob or upload id: 128 random bits as hex."""
    return secrets.token_hex(16)


def fragment_location(drive: Drive, desc: dict[str, Any], index: int) -> tuple[Path, int, int | None]:
    """Where fragment ``index`` of the blob ``desc`` lies on ``drive``: ``(path, offset, length)``.

    A fragment file (offset 0, length None: the whole file) or a volume
    entry's payload (``desc["vols"]``, see :mod:`.volumes`).
    """
    vols = desc.get("vols")
    loc = vols[index] if vols and index < len(vols) else None
    if loc:
        return volume_path(drive.path, loc[0]), loc[1], loc[2]
    return drive.fragment_path(desc["id"], index), 0, None


class BlobWriter:
    """Stream bytes in with :meth:`write`, then :meth:`finish` for a durable descriptor."""

    def __init__(
        self, store: Store, tier: str, blob_id: str | None = None, *, data_key: bytes | None = None, pack: bool = True
    ) -> None:
        """``pack=False``: fragment files even for a small blob (a locked version's, made immutable on its own)."""
        self.store = store
        self.tier_config = store.config.tier(tier)
        self.tier = tier
        self.blob_id = blob_id or new_id()
        k, m = self.tier_config.k, self.tier_config.m
        self.codec = get_codec(k, m, self.tier_config.backend)
        self.segment_size = store.config.segment_size
        ranked = rendezvous_order(self.blob_id, store.drives[tier])
        healthy = [d for d in ranked if store.drive_healthy(d)]
        if len(healthy) < k + 1:
            raise InsufficientDrives(f"tier {tier!r} has {len(healthy)} healthy drives; a write needs at least {k + 1} (k+1)")
        # Fragment i goes to the i-th chosen drive. Drives that are down only
        # fill the places healthy ones cannot; their fragments are healed later.
        chosen = healthy[: k + m]
        if len(chosen) < k + m:
            chosen += [d for d in ranked if d not in chosen][: k + m - len(chosen)]
        self.placement: list[Drive] = chosen
        # Encrypted before erasure coding: fragments, parity and healing only ever see ciphertext.
        self.cipher = SegmentCipher(data_key, self.blob_id) if data_key is not None else None
        self.writers: dict[int, FragmentWriter] = {}
        # Small blobs are kept in memory and packed into volumes at finish; a blob
        # that outgrows pack_max spills to fragment files (:meth:`_spill`).
        self.pack_max = store.config.pack_max if pack else 0
        self.packing = self.pack_max > 0
        self.packed: dict[int, tuple[Any, int, int]] = {}  # index -> (volume, payload offset, length)
        # A store an older objfs may still open keeps one CRC per frame until `objfs upgrade`.
        self.crc_block = CRC_BLOCK if store.config.format >= BLOCK_CRC_FORMAT else 0
        # Declared before any file exists: if this process dies before the
        # commit, scrub knows these fragments never became an object.
        store.intents.begin(self.blob_id)
        self._declared = True
        tag = owner_tag()
        for index, drive in enumerate(chosen):
            if drive not in healthy:
                continue
            tmp = drive.tmp_dir / f"{self.blob_id}.f{index}.{tag}.tmp"
            try:
                self.writers[index] = FragmentWriter(
                    tmp,
                    drive.fragment_path(self.blob_id, index),
                    drive.path / BLOBS,
                    in_memory=self.packing,
                    block=self.crc_block,
                )
            except OSError:
                store.mark_drive_suspect(drive)
        self._check_quorum()
        self._buffer = bytearray()
        self.size = 0
        self.nseg = 0
        self.fsz = 0
        self.lfsz = 0

    def _check_quorum(self) -> None:
        alive = [w for w in self.writers.values() if w.failed is None]
        if len(alive) < self.codec.k + 1:
            self.discard()
            nospace = any(isinstance(w.failed, OSError) and w.failed.errno == errno.ENOSPC for w in self.writers.values())
            cls = NoSpace if nospace else InsufficientDrives
            raise cls(f"only {len(alive)} drives accepted the write; at least {self.codec.k + 1} are needed")

    def _encode(self, segment: bytes) -> None:
        plain_length = len(segment)
        if self.cipher is not None and segment:
            segment = self.cipher.seal(self.nseg, segment)
        fragments = self.codec.encode(segment)
        if self.nseg == 0:
            self.fsz = len(fragments[0])
        self.lfsz = len(fragments[0])
        for index, writer in self.writers.items():
            writer.write_frame(fragments[index])
        self.nseg += 1
        self.size += plain_length
        if self.packing and self.size > self.pack_max:
            self.unpack()
        if any(w.failed is not None for w in self.writers.values()):
            self._check_quorum()

    def unpack(self) -> None:
        """Write this blob as fragment files, not volume entries (it is large, or locked at birth)."""
        if not self.packing:
            return
        self.packing = False
        for index, writer in self.writers.items():
            writer.spill()
            if writer.failed is not None:
                self.store.mark_drive_suspect(self.placement[index])

    def write(self, data: bytes) -> None:
        """Add bytes; full segments are encoded and written as they fill."""
        seg = self.segment_size
        if not self._buffer and len(data) >= seg:
            view = memoryview(data)
            while len(view) >= seg:
                self._encode(bytes(view[:seg]))
                view = view[seg:]
            self._buffer += view
            return
        self._buffer += data
        while len(self._buffer) >= seg:
            self._encode(bytes(self._buffer[:seg]))
            del self._buffer[:seg]

    def ingest(
        self,
        source: BinaryIO,
        length: int | None = None,
        *,
        content_md5: bytes | None = None,
        verify: Any = None,
        head_bytes: int = 0,
    ) -> tuple[str, bytes]:
        """Stream ``source`` in one segment at a time (bounded memory) and encode all of it.

        The MD5 of each chunk is computed in the I/O pool while the chunk is
        encoded. Returns (MD5 hex, the first ``head_bytes`` bytes). Raises
        IncompleteBody when the stream ends short of ``length``, BadDigest when
        ``content_md5`` differs, and whatever ``verify()`` raises; nothing is
        durable until :meth:`finish`.
        """
        md5 = hashlib.md5()
        head = bytearray()
        hashing = None
        remaining = length
        while remaining is None or remaining > 0:
            chunk = source.read(self.segment_size if remaining is None else min(self.segment_size, remaining))
            if not chunk:
                break
            if hashing is not None:
                hashing.result()
            hashing = self.store.io_pool.submit(md5.update, chunk)
            if len(head) < head_bytes:
                head += chunk[: head_bytes - len(head)]
            self.write(chunk)
            if remaining is not None:
                remaining -= len(chunk)
        if hashing is not None:
            hashing.result()
        if remaining:
            raise IncompleteBody(f"the body ended {remaining} bytes short of its declared length")
        if content_md5 is not None and md5.digest() != content_md5:
            raise BadDigest("the Content-MD5 does not match the body")
        if verify is not None:
            verify()
        self.end_data()
        return md5.hexdigest(), bytes(head)

    def end_data(self) -> None:
        """Encode the last, partial segment: :attr:`size` is final afterwards."""
        if self._buffer or self.nseg == 0:
            self._encode(bytes(self._buffer))
            self._buffer.clear()

    def finish(self, owner: dict[str, Any]) -> dict[str, Any]:
        """Flush, fsync and rename every fragment; return the blob's descriptor.

        ``owner`` goes into every fragment's footer (the record for
        rebuild-index). Raises InsufficientDrives or NoSpace, after removing
        what was written, when fewer than k+1 fragments became durable.
        """
        self.end_data()
        desc = self.descriptor()
        footer = {"blob": desc, "owner": owner, "writer": own_identity()}  # so scrub can tell a write in progress

        done = self._commit_packed(footer) if self.packing else self._commit_fragments(footer)
        if len(done) < self.codec.k + 1:
            self.discard()
            self._check_quorum()
        desc["written"] = sorted(done)
        if self.packed:
            # Where each fragment is (not in the footers: rebuild-index learns it from the volume it scans).
            desc["vols"] = [
                [self.packed[i][0].volume_id, self.packed[i][1], self.packed[i][2]] if i in self.packed else None
                for i in range(len(self.placement))
            ]
        return desc

    def _commit_packed(self, footer: dict[str, Any]) -> list[int]:
        """Append every fragment to its drive's volume and sync; the indexes that are durable.

        The appends of concurrent writers to one volume share its fdatasync
        (:meth:`.volumes.Volume.sync_through`). An entry whose append or sync
        failed is not counted (a failed sync retires its volume).
        """

        def append(index: int) -> bool:
            writer = self.writers[index]
            if writer.failed is not None:
                return False
            drive = self.placement[index]
            try:
                writer.seal(dict(footer, index=index))
                payload = writer.memory
                volume, offset = self.store.volumes.append(drive.path, self.blob_id, index, payload)
                try:
                    self.packed[index] = (volume, offset, len(payload))
                    writer.memory = None
                    volume.sync_through(offset + len(payload))
                    unreachable = os.fstat(volume.fd).st_nlink == 0
                finally:
                    volume.release()
                if unreachable:
                    # The drive was wiped or replaced under our open volume: the entry is
                    # durable in an inode no path reaches (a fragment file's open would have failed).
                    self.store.volumes.retire(volume)
                    raise OSError(errno.ENOENT, "the volume was removed from its drive", str(volume.path))
                return True
            except OSError as exc:
                self.packed.pop(index, None)
                writer.failed = exc
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    self.store.mark_drive_suspect(drive)
                return False

        indexes = list(self.writers)
        done = [i for i, ok in zip(indexes, self.store.io_pool.map(append, indexes)) if ok]
        for index in indexes:
            if index not in done:
                self.writers[index].abort()
        return done

    def _commit_fragments(self, footer: dict[str, Any]) -> list[int]:
        """Seal, place and sync every fragment; the indexes that are durable (the others are removed).

        In phases, so the fragments' syncs overlap and share journal
        commits: every file is sealed (its writeback started) and renamed
        into place, then each fragment's file and the directories that
        gained an entry are synced, the fragments in parallel. A fragment
        counts only when its file and all its directories synced. The
        directory syncs after a file's usually find their entries committed
        by it (one journal commit), so they run in the same task.
        """
        failed: dict[int, OSError] = {}
        needs: dict[Path, list[int]] = {}
        tasks: dict[int, list[Path]] = {}
        for index, writer in self.writers.items():
            try:
                writer.seal(dict(footer, index=index))
                directories = writer.place()
            except OSError as exc:
                failed[index] = exc
                continue
            tasks[index] = []
            for directory in directories:
                if directory not in needs:
                    tasks[index].append(directory)  # synced once, by the first fragment that needs it
                needs.setdefault(directory, []).append(index)

        def sync(task: tuple[int, list[Path]]) -> None:
            index, directories = task
            try:
                self.writers[index].sync()
            except OSError as exc:
                failed.setdefault(index, exc)
            for directory in directories:
                try:
                    fsync_dir(directory)
                except OSError as exc:
                    for broken in needs[directory]:
                        failed.setdefault(broken, exc)

        list(self.store.io_pool.map(sync, tasks.items()))
        for index, exc in failed.items():
            writer = self.writers[index]
            writer.failed = exc
            writer.abort()
        return [i for i in self.writers if i not in failed]

    def descriptor(self) -> dict[str, Any]:
        desc = {
            "id": self.blob_id,
            "tier": self.tier,
            "size": self.size,
            "k": self.codec.k,
            "m": self.codec.m,
            "ec": self.codec.backend,
            "seg": self.segment_size,
            "nseg": self.nseg,
            "fsz": self.fsz,
            "lfsz": self.lfsz,
            "drives": [d.drive_id for d in self.placement],
        }
        if self.cipher is not None:
            desc["enc"] = TAG_BYTES  # bytes each segment grew by (its GCM tag)
        if self.crc_block:
            desc["cb"] = self.crc_block
        return desc

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()

    def committed(self) -> None:
        """The index references the blob now: it is no longer an intent."""
        if self._declared:
            self._declared = False
            self.store.intents.end(self.blob_id)

    def discard(self) -> None:
        """Remove fragments already renamed into place or appended (the write is not acknowledged)."""
        self.abort()
        removed = True
        for index, (volume, offset, length) in list(self.packed.items()):
            try:
                punch(volume.path, offset, length)
                del self.packed[index]
            except OSError:
                removed = False
        for index, drive in enumerate(self.placement):
            try:
                os.unlink(drive.fragment_path(self.blob_id, index))
            except FileNotFoundError:
                pass
            except OSError:
                removed = False
        if removed:
            self.committed()  # nothing of it is left: the intent is settled


class BlobReader:
    """Verified, self-repairing reads of one blob's segments. Not thread-safe."""

    def __init__(self, store: Store, desc: dict[str, Any], *, data_key: bytes | None = None) -> None:
        self.store = store
        self.desc = desc
        # Without the key only fragment-level work (heal, scrub) is possible on an encrypted blob.
        self.cipher = SegmentCipher(data_key, desc["id"]) if data_key is not None and desc.get("enc") else None
        self.codec = get_codec(desc["k"], desc["m"], desc["ec"])
        self.drives: list[Drive | None] = [store.drive_by_id(d) for d in desc["drives"]]
        self._files: dict[int, Any] = {}
        self._open_lock = threading.Lock()
        self.bad: set[int] = set()  # fragment indexes found missing or corrupt

    def segment_length(self, segment: int) -> int:
        seg = self.desc["seg"]
        return min(seg, self.desc["size"] - segment * seg)

    def _frag_len(self, segment: int) -> int:
        return self.desc["lfsz"] if segment == self.desc["nseg"] - 1 else self.desc["fsz"]

    def _open(self, index: int):
        if index in self._files:
            return self._files[index]
        with self._open_lock:  # prefetches of several segments may open the same fragment
            if index in self._files:
                return self._files[index]
            return self._open_locked(index)

    def _open_locked(self, index: int):
        drive = self.drives[index]
        handle = None
        if drive is not None:
            try:
                handle = os.open(fragment_location(drive, self.desc, index)[0], os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                handle = None
        self._files[index] = handle
        return handle

    def _base(self, index: int) -> int:
        vols = self.desc.get("vols")
        return vols[index][1] if vols and vols[index] else 0

    def read_fragment(self, index: int, segment: int) -> bytes | None:
        """Fragment ``index`` of ``segment`` if present and its CRC holds, else None."""
        if index in self.bad:
            return None
        handle = self._open(index)
        frame = None
        if handle is not None:
            try:
                frame = read_frame(
                    handle, segment, self.desc["fsz"], self._frag_len(segment), self._base(index), self.desc.get("cb", 0)
                )
            except OSError:
                frame = None
        if frame is None:
            self.bad.add(index)
        return frame

    def collect(self, segment: int, want: int) -> dict[int, bytes]:
        """At least ``want`` verified fragments of ``segment`` (data fragments first), if possible."""
        total = self.desc["k"] + self.desc["m"]
        got: dict[int, bytes] = {}
        for index in range(total):
            if len(got) >= want:
                break
            frame = self.read_fragment(index, segment)
            if frame is not None:
                got[index] = frame
        return got

    def read_segment(self, segment: int) -> bytes:
        """The exact bytes of ``segment``; raises DataLoss if more than m fragments are lost."""
        if self.desc["size"] == 0:
            return b""
        k = self.desc["k"]
        length = self.segment_length(segment)
        # The k data fragments live on k different drives: read them at once.
        pool: ThreadPoolExecutor = self.store.read_pool
        frames = (
            pool.map(lambda i: (i, self.read_fragment(i, segment)), range(k)) if k > 1 else [(0, self.read_fragment(0, segment))]
        )
        fragments = {i: f for i, f in frames if f is not None}
        if len(fragments) < k:
            for index in range(k, k + self.desc["m"]):
                frame = self.read_fragment(index, segment)
                if frame is not None:
                    fragments[index] = frame
                    if len(fragments) == k:
                        break
        if len(fragments) < k:
            raise DataLoss(f"blob {self.desc['id']} segment {segment}: {len(fragments)} of {k} needed fragments readable")
        if not self.desc.get("enc"):
            return self.codec.decode(fragments, length)
        if self.cipher is None:
            raise EncryptionKeyRequired(f"blob {self.desc['id']} is encrypted and no key was given")
        # GCM authenticates the decoded segment, whichever fragments (data or parity) it came from.
        return self.cipher.open(segment, self.codec.decode(fragments, length + self.desc["enc"]))

    def read_piece(self, segment: int, offset: int, size: int = 1, *, nowait: bool = False) -> tuple[int, bytes]:
        """``(start, bytes)``: a verified run of ``segment``'s bytes that holds ``offset`` (within the segment).

        For a small read. With a systematic code each data fragment holds one
        contiguous share of the segment (see :mod:`.codec`), so only the one
        fragment that holds ``offset`` is read and CRC-checked, not k of them:
        for a blob with a CRC per block (``cb``) only the blocks holding
        ``[offset, offset + size)`` (up to the share's end), else its whole
        frame. Falls back to the whole decoded segment (``start`` 0) when that
        fragment is unreadable, the blob is encrypted or the codec has no
        such fast path.

        With ``nowait`` it reads only what is already open and in the page
        cache, else raises :class:`BlockingIOError` (for an event loop that
        must not wait on a disk; it retries in a thread).
        """
        header = self.codec.data_offset()
        k = self.desc["k"]
        length = self.segment_length(segment)
        block = self.desc.get("cb", 0)
        if header is not None and not self.desc.get("enc") and length > 0:
            per = -(-length // k)
            index = offset // per
            start = index * per
            share = min(per, length - start)
            if block and index not in self.bad:
                lo = header + offset - start
                piece = self._read_blocks(index, segment, lo, min(lo + size, header + share), nowait)
                if piece is not None:
                    first, data = piece
                    cut = max(header - first, 0)
                    end = min(len(data), header + share - first)
                    return start + first + cut - header, data[cut:end]
                self.bad.add(index)
            if nowait:
                raise BlockingIOError(errno.EAGAIN, "a damaged fragment is decoded in a thread")
            frame = self.read_fragment(index, segment)
            if frame is not None:
                return start, bytes(frame[header : header + share])
        if nowait:
            raise BlockingIOError(errno.EAGAIN, "this blob is read whole segments at a time")
        return 0, self.read_segment(segment)

    def _read_blocks(self, index: int, segment: int, lo: int, hi: int, nowait: bool) -> tuple[int, bytes] | None:
        """The checked CRC blocks of fragment ``index``'s frame that hold ``[lo, hi)``; None if missing or damaged.

        With ``nowait``, BlockingIOError when the fragment is not open yet or
        the bytes are not all in the page cache.
        """
        if nowait and index not in self._files:
            raise BlockingIOError(errno.EAGAIN, "the fragment is not open yet")
        handle = self._open(index)
        if handle is None:
            return None
        try:
            return read_frame_blocks(
                handle,
                segment,
                self.desc["fsz"],
                self._frag_len(segment),
                self._base(index),
                self.desc["cb"],
                lo,
                hi,
                nowait=nowait,
            )
        except BlockingIOError:
            raise
        except OSError:
            return None

    def iter_range(self, start: int, end: int, prefetch: bool = True):
        """Yield the bytes ``[start, end)`` of the blob, a segment at a time.

        With ``prefetch``, the next segments are read from the drives while
        the caller consumes this one: one ahead for short ranges, up to
        :data:`PREFETCH_DEPTH` for long sequential reads (more I/O in flight on
        cold disks; memory stays bounded at that many segments per stream).
        """
        seg = self.desc["seg"]
        if end <= start:
            return
        first, last = start // seg, (end - 1) // seg
        pool: ThreadPoolExecutor = self.store.prefetch_pool
        depth = (PREFETCH_DEPTH if last - first >= 2 * PREFETCH_DEPTH else 1) if prefetch else 0
        ahead: collections.deque = collections.deque()  # (segment, future), in order
        next_segment = first
        try:
            for segment in range(first, last + 1):
                if ahead and ahead[0][0] == segment:
                    data = ahead.popleft()[1].result()
                else:
                    data = self.read_segment(segment)
                    next_segment = max(next_segment, segment + 1)
                while depth and next_segment <= min(last, segment + depth):
                    ahead.append((next_segment, pool.submit(self.read_segment, next_segment)))
                    next_segment += 1
                lo = start - segment * seg if segment == first else 0
                hi = end - segment * seg if segment == last else len(data)
                yield data[lo:hi] if (lo, hi) != (0, len(data)) else data
        finally:
            for _, future in ahead:
                future.cancel() or future.exception()  # never close files under a running prefetch

    def close(self) -> None:
        for handle in self._files.values():
            if handle is not None:
                os.close(handle)
        self._files.clear()
