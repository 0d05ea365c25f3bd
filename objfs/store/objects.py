"""Object operations: put, get, head, delete, list, copy, rename, attributes.

A record (msgpack dict in the index) describes one version of an object:
its name, size, ETag, metadata, POSIX attributes, retention and the blob(s)
holding its bytes. Records are built here and nowhere else.
"""

from __future__ import annotations

import bisect
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from . import crypto
from .audit import audited, guarded
from .blobs import BlobWriter, new_id
from .crypto import Encryption
from .errors import (
    DataLoss,
    InvalidArgument,
    InvalidPartNumber,
    NoSuchBucket,
    NoSuchKey,
    NoSuchVersion,
    PreconditionFailed,
)
from .index import Txn, object_key, version_key
from .locks import check_lock, check_new_retention, lock_active
from .names import check_key
from .policy import check_acl, check_public_acl_allowed
from .remotetier import open_blob
from .sparse import LogicalDigest, iter_logical, normalized_extents, piece_of_sparse, read_logical, stored_size

if TYPE_CHECKING:
    from .engine import Principal, Store

#: Tries of a content-only commit whose attributes another front keeps changing.
COMMIT_ATTEMPTS = 32
HEAD_BYTES = 2 << 20  # first bytes of a body kept for indexers (DICOM header)
STANDARD_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language", "expires")
# S3 additional checksums of the whole body (x-amz-checksum-crc32 ...), kept so GET/HEAD can return them.
CHECKSUM_HEADER_PREFIX = "x-amz-checksum-"


@dataclass
class ObjectInfo:
    """What HEAD tells about one version of an object."""

    bucket: str
    key: str
    version_id: str
    size: int
    etag: str
    content_type: str
    modified: float
    metadata: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    posix: dict[str, int] = field(default_factory=dict)
    xattrs: dict[str, bytes] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    retention: dict[str, Any] | None = None
    legal_hold: bool = False
    dicom: dict[str, Any] | None = None
    delete_marker: bool = False
    parts_count: int = 0
    object_id: str = ""
    record: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ObjectInfo:
        return cls(
            bucket=record["bucket"],
            key=record["key"],
            version_id=record["version"],
            size=record["size"],
            etag=record["etag"],
            content_type=record.get("ctype") or "application/octet-stream",
            modified=record["created"],
            metadata=dict(record.get("meta") or {}),
            headers=dict(record.get("headers") or {}),
            posix=dict(record.get("posix") or {}),
            xattrs=dict(record.get("xattrs") or {}),
            tags=dict(record.get("tags") or {}),
            retention=record.get("retention"),
            legal_hold=bool(record.get("legal_hold")),
            dicom=record.get("dicom"),
            delete_marker=bool(record.get("delete_marker")),
            parts_count=record.get("mp") or 0,
            object_id=record["id"],
            record=record,
        )

    @property
    def stored_size(self) -> int:
        """Bytes of content kept on the drives: the size less a sparse version's holes (st_blocks)."""
        return stored_size(self.record) if self.record else self.size

    def parts(self) -> list[dict[str, Any]]:
        """The parts a multipart object was assembled from, in order: ``number``, ``size``, ``checksums``.

        Empty for an object written in one piece.
        """
        if not self.parts_count:
            return []
        sums = self.record.get("part_checksums") or [{}] * self.parts_count
        return [
            {"number": i, "size": desc["size"], "checksums": dict(sums[i - 1])} for i, desc in enumerate(self.record["parts"], 1)
        ]

    def part_range(self, number: int) -> tuple[int, int]:
        """Bytes ``[start, end)`` of part ``number`` (1-based) as it was uploaded.

        An object written in one piece is its own part 1. Raises
        InvalidPartNumber for a part the object does not have.
        """
        if self.parts_count == 0:
            if number != 1:
                raise InvalidPartNumber(f"{self.bucket}/{self.key} was not uploaded in parts; it has part 1 only")
            return 0, self.size
        if not 1 <= number <= self.parts_count:
            raise InvalidPartNumber(f"{self.bucket}/{self.key} has {self.parts_count} parts, not {number}")
        sizes = [desc["size"] for desc in self.record["parts"]]
        start = sum(sizes[: number - 1])
        return start, start + sizes[number - 1]


@dataclass
class Listing:
    """One page of a listing. ``next_marker`` continues it (exclusive)."""

    objects: list[ObjectInfo]
    common_prefixes: list[str]
    truncated: bool
    next_marker: str | None


class ObjectReader:
    """Reads one object version; verified, repaired on the fly. Use as a context manager.

    From creation to :meth:`close` the reader holds a lease on the version's
    blobs (see :mod:`.leases`): the version stays readable even if it is
    deleted or replaced meanwhile. A read that cannot return the exact bytes
    raises DataLoss (never short or wrong bytes) and is audited as failed.
    """

    def __init__(
        self,
        store: Store,
        info: ObjectInfo,
        principal: Principal | None = None,
        *,
        customer_key: bytes | None = None,
        data_key: bytes | None = None,
    ) -> None:
        self.store = store
        self.info = info
        self.principal = principal
        sse = info.record.get("sse")
        if sse and data_key is None:
            # Before any lease: an SSE-C object read without its key is refused here.
            data_key = store.encryption.data_key(sse, customer_key)
        self._blob_ids = [desc["id"] for desc in info.record.get("parts", [])]
        store.leases.hold(self._blob_ids)
        self._failed = False
        self._readers = [open_blob(store, desc, data_key=data_key) for desc in info.record.get("parts", [])]
        self._offsets = []
        pos = 0
        for desc in info.record.get("parts", []):
            self._offsets.append(pos)
            pos += desc["size"]
        self._cache: tuple[int, int, bytes] | None = None  # part, segment, bytes
        #: Data ranges of a sparse version (see :mod:`.sparse`); None: the blobs hold every byte.
        self._extents = info.record.get("extents") or None
        self._stored = pos if self._extents is not None else info.size

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield bytes ``[start, end)`` segment by segment; raises DataLoss, never wrong bytes.

        A sparse version's holes are zeros that touch no drive.
        """
        end = self.info.size if end is None else min(end, self.info.size)
        if self._extents is None:
            return self.iter_stored(start, end)
        return iter_logical(self._extents, self.info.size, start, end, self.iter_stored)

    def iter_stored(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The blobs' bytes ``[start, end)`` (a sparse version's data without its holes; for the mover)."""
        end = self._stored if end is None else min(end, self._stored)
        try:
            for reader, offset in zip(self._readers, self._offsets):
                size = reader.desc["size"]
                lo, hi = max(start - offset, 0), min(end - offset, size)
                if lo < hi:
                    yield from reader.iter_range(lo, hi)
        except DataLoss as exc:
            self._record_failure(exc)
            raise

    def _record_failure(self, exc: DataLoss) -> None:
        """The audit says the read failed (once per reader), whoever opened it."""
        if self._failed:
            return
        self._failed = True
        info = self.info
        self.store.record_audit(
            "read", self.principal, "failed", True, bucket=info.bucket, key=info.key, version=info.version_id, detail=str(exc)
        )

    def read(self, offset: int, length: int) -> bytes:
        """Random access (for the FUSE mount): up to ``length`` bytes at ``offset``."""
        try:
            if self._extents is not None:
                return read_logical(self._extents, self.info.size, offset, length, self._read)
            return self._read(offset, length)
        except DataLoss as exc:
            self._record_failure(exc)
            raise

    def read_piece(self, offset: int, size: int = 1, *, nowait: bool = False) -> tuple[int, bytes]:
        """``(start, bytes)``: verified bytes of the object around ``offset``, the least a small read costs.

        Usually the CRC blocks of one data fragment that hold ``[offset,
        offset + size)`` (the fragment's whole frame for blobs written before
        store format 4), not k fragments; the whole segment where that
        fragment is unreadable or the version is encrypted. Empty at or past
        the end. ``nowait``: from open files and the page cache only, else
        :class:`BlockingIOError` (see :meth:`.blobs.BlobReader.read_piece`).
        """
        if offset >= self.info.size:
            return offset, b""
        if self._extents is not None:
            return piece_of_sparse(
                self._extents, self.info.size, offset, lambda stored: self._read_piece(stored, size, nowait=nowait)
            )
        return self._read_piece(offset, size, nowait=nowait)

    def _read_piece(self, offset: int, size: int = 1, *, nowait: bool = False) -> tuple[int, bytes]:
        """read_piece at a stored offset (the blobs' bytes)."""
        if offset >= self._stored:
            return offset, b""
        part = bisect.bisect_right(self._offsets, offset) - 1
        reader, base = self._readers[part], self._offsets[part]
        seg_size = reader.desc["seg"]
        segment = (offset - base) // seg_size
        if self._cache is not None and self._cache[:2] == (part, segment):
            return base + segment * seg_size, self._cache[2]
        try:
            start, data = reader.read_piece(segment, offset - base - segment * seg_size, size, nowait=nowait)
        except DataLoss as exc:
            self._record_failure(exc)
            raise
        return base + segment * seg_size + start, data

    def _read(self, offset: int, length: int) -> bytes:
        out = []
        end = min(offset + length, self._stored)
        pos = offset
        while pos < end:
            part = bisect.bisect_right(self._offsets, pos) - 1  # up to 10,000 parts
            reader, base = self._readers[part], self._offsets[part]
            seg_size = reader.desc["seg"]
            segment = (pos - base) // seg_size
            if self._cache is None or self._cache[:2] != (part, segment):
                self._cache = (part, segment, reader.read_segment(segment))
            data = self._cache[2]
            lo = pos - base - segment * seg_size
            chunk = data[lo : lo + (end - pos)]
            if not chunk:
                break
            out.append(chunk)
            pos += len(chunk)
        return b"".join(out)

    def readall(self) -> bytes:
        return b"".join(self.iter_range())

    def close(self) -> None:
        bad = False
        for reader in self._readers:
            bad = bad or bool(reader.bad)
            reader.close()
        self._readers = []
        if self._blob_ids:
            self.store.leases.release(self._blob_ids)
            self._blob_ids = []
        # A version retired while it was read is not damaged: only live versions are queued.
        if bad and self.store.record_is_live(self.info.record):
            self.store.queue_heal(self.info.record, "fragment missing or corrupt on read")

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class IterStream(io.RawIOBase):
    """A readable stream over an iterator of bytes (for copies)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buf) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buf += chunk
        if size < 0:
            size = len(self._buf)
        out, self._buf = self._buf[:size], self._buf[size:]
        return out


def etag_condition_holds(condition: str, etag: str) -> bool:
    """Whether an ``If-Match`` value (``*``, or a list of ETags, quoted or not) names ``etag``."""
    for item in condition.split(","):
        item = item.strip()
        if item.startswith("W/"):
            item = item[2:]
        if item == "*" or item.strip('"') == etag:
            return True
    return False


def check_write_conditions(bucket: str, key: str, live: dict[str, Any] | None, if_match: str | None, if_none_match: bool) -> None:
    """S3's conditional-write rules against the live version (None: absent or a delete marker).

    ``If-None-Match: *`` fails on any live version; ``If-Match`` on a missing
    key is NoSuchKey (there is nothing whose ETag could match), on a present
    one PreconditionFailed unless it names the live ETag (``*``: any).
    """
    if if_none_match and live is not None:
        raise PreconditionFailed(f"{bucket}/{key} exists already")
    if if_match is not None:
        if live is None:
            raise NoSuchKey(f"{bucket}/{key} does not exist")
        if not etag_condition_holds(if_match, live["etag"]):
            raise PreconditionFailed(f"{bucket}/{key} does not have ETag {if_match}")


def _inherited(base: ObjectInfo | None, xattr_changes: dict[str, bytes | None] | None) -> tuple:
    """(content type, metadata, headers, xattrs) a new content of ``base`` keeps, with xattr changes applied."""
    xattrs = dict(base.xattrs) if base is not None else {}
    for name, value in (xattr_changes or {}).items():
        if value is None:
            xattrs.pop(name, None)
        else:
            xattrs[name] = value
    if base is None:
        return None, None, None, xattrs
    return base.content_type, dict(base.metadata), dict(base.headers), xattrs


def merge_indexed(record: dict[str, Any], extra: dict[str, Any] | None) -> None:
    """Add an indexer's fields to a new record.

    Its ``tags`` (S3 object tags derived from the body, e.g. DICOM PatientID)
    are merged into the record's tags instead of replacing them; tags the
    caller gave explicitly win on a clash.
    """
    if not extra:
        return
    extra = dict(extra)
    derived = extra.pop("tags", None)
    record.update(extra)
    if derived:
        record["tags"] = {**derived, **(record.get("tags") or {})}


class ObjectsMixin:
    """Object operations of :class:`objfs.store.Store`."""

    # -- writes ---------------------------------------------------------------

    @audited("write")
    def put_object(
        self: Store,
        bucket: str,
        key: str,
        body: BinaryIO | bytes,
        *,
        length: int | None = None,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        posix: dict[str, int] | None = None,
        xattrs: dict[str, bytes] | None = None,
        tags: dict[str, str] | None = None,
        content_md5: bytes | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
        retention: dict[str, Any] | None = None,
        legal_hold: bool = False,
        principal: Principal | None = None,
        verify: Any = None,
        if_unchanged: ObjectInfo | None = None,
        keep_attributes: bool = False,
        xattr_changes: dict[str, bytes | None] | None = None,
        encryption: Encryption | None = None,
        acl: str | list[dict[str, str]] | None = None,
        tier: str | None = None,
        extents: list[tuple[int, int]] | None = None,
    ) -> ObjectInfo:
        """Store ``body`` as the new current version of ``bucket/key``.

        Durable when it returns: every written fragment is fsynced and renamed,
        its directory fsynced, and the index committed. Raises (and leaves
        nothing visible) on a bad digest, a short body, a failed condition, a
        WORM lock, or fewer than k+1 writable drives. ``verify``, if given, is
        called with nothing after the body is read and before the commit; it
        raises to refuse the write (used for S3 checksums). ``if_unchanged``
        makes the write conditional on the current version still being that
        record, attributes included (PreconditionFailed otherwise).
        ``keep_attributes`` replaces only the content: content type, user
        metadata, standard headers and xattrs (with ``xattr_changes`` applied,
        None removing one) are those of the version current *at the commit*,
        so a metadata change another front makes meanwhile is never lost (the
        mount's close); ``posix`` still applies. ``encryption`` encrypts the
        body at rest; without it the bucket's default encryption (if any)
        applies (see :mod:`.crypto`). ``tier`` (default: the first tier) is
        where the bytes go (a storage class named by the front, :mod:`.tiers`).
        ``extents`` makes a sparse version (:mod:`.sparse`): ``length`` is
        then the logical size, the sorted ``(offset, length)`` data ranges
        are the only bytes stored, and ``body`` yields just those bytes, in
        order; the rest reads as zeros (the mount's holes).
        """
        check_key(key)
        tier = self.config.tier(tier).name if tier else self.config.hot.name
        if isinstance(body, (bytes, bytearray, memoryview)):
            length = len(body) if length is None else length
            body = io.BytesIO(body)
        with self.index.read() as txn:
            settings = self._bucket(txn, bucket)
        if acl is not None:
            acl = check_acl(acl)
            check_public_acl_allowed(settings, acl)
        base = None
        if keep_attributes:
            base = self._current_or_none(bucket, key)
            content_type, metadata, headers, xattrs = _inherited(base, xattr_changes)
        if (retention or legal_hold) and not settings.get("object_lock"):
            raise InvalidArgument(f"bucket {bucket!r} was not created with object lock enabled")
        check_new_retention(retention, self.clock.now())
        sse, data_key = crypto.for_write(self.encryption, settings, encryption)
        logical = None
        if extents is not None:
            if length is None:
                raise InvalidArgument("a sparse body needs its logical length")
            extents = normalized_extents(extents, length)
            if extents is not None:
                logical = LogicalDigest(body, extents, length, HEAD_BYTES)
                body, length = logical, sum(n for _, n in extents)
        writer = BlobWriter(self, tier, data_key=data_key)
        try:
            # The head (for indexers) is taken from the plaintext, before encryption.
            etag, head = writer.ingest(body, length, content_md5=content_md5, verify=verify, head_bytes=HEAD_BYTES)
            size = writer.size
            if logical is not None:
                etag, head, size = logical.finish(), bytes(logical.head), logical.size
            object_id = writer.blob_id
            record = self._new_record(bucket, key, object_id, size, etag, content_type, metadata, headers, posix, xattrs, tags)
            if logical is not None:
                record["extents"] = extents
            # A directory marker is not a study: locking it would freeze the tree's shape (rsync -a).
            if retention is None and settings.get("object_lock") and settings.get("lock_default") and not key.endswith("/"):
                default = settings["lock_default"]
                retention = {"mode": default["mode"], "until": self.clock.now() + default["seconds"], "source": "default"}
            record["retention"] = retention
            record["legal_hold"] = bool(legal_hold)
            if principal is not None and principal.account:
                record["owner"] = principal.account
            if acl is not None and acl != "private":
                record["acl"] = acl
            if sse is not None:
                record["sse"] = sse  # in the footer too: rebuild-index restores it
            # Known before the commit so the footer (rebuild-index) carries them too.
            record["seq"] = time.time_ns()
            if settings.get("versioning") == "Enabled":
                record["version"] = object_id
            for indexer in self.indexers:
                merge_indexed(record, indexer.extract(head, key))
            if retention or legal_hold:
                writer.unpack()  # locked at birth: its own files, made immutable below (volumes are shared)
            desc = writer.finish(crypto.seal_record(self.encryption, record))
        except BaseException:
            writer.discard()
            raise
        record["parts"] = [desc]
        degraded = len(desc["written"]) < desc["k"] + desc["m"]
        try:
            if keep_attributes:
                self._commit_keeping_attributes(settings, record, base, xattr_changes, principal)
            else:
                self._commit_put(
                    settings,
                    record,
                    if_match=if_match,
                    if_none_match=if_none_match,
                    principal=principal,
                    if_unchanged=if_unchanged,
                )
        except BaseException:
            writer.discard()
            raise
        writer.committed()
        if degraded:
            self.queue_heal(record, "written with a drive missing")
        if record.get("retention") or record.get("legal_hold"):
            self._protect_files(record, True)
        return ObjectInfo.from_record(record)

    def _current_or_none(self: Store, bucket: str, key: str) -> ObjectInfo | None:
        try:
            return self.head_object(bucket, key)
        except NoSuchKey:
            return None

    def _commit_keeping_attributes(self: Store, settings, record, base, xattr_changes, principal) -> None:
        """Commit new content under the attributes current at the commit (see ``keep_attributes``).

        When another front changed them since ``base`` was read, the record
        takes the new ones, the drives learn the merged record (a newer
        ``gen``), and the commit is tried again: the body is not read twice.
        """
        for _attempt in range(COMMIT_ATTEMPTS):
            try:
                self._commit_put(settings, record, principal=principal, if_unchanged=base, if_none_match=base is None)
                return
            except PreconditionFailed:
                base = self._current_or_none(record["bucket"], record["key"])
                ctype, meta, headers, xattrs = _inherited(base, xattr_changes)
                record.update(ctype=ctype or "application/octet-stream", meta=meta, headers=headers, xattrs=xattrs)
                record["gen"] = time.time_ns()
                where = {"id": record["id"], "bucket": record["bucket"], "key": record["key"], "gen": record["gen"]}
                with self._meta_change([where]):
                    self._write_meta_files(record)
        raise PreconditionFailed(f"{record['bucket']}/{record['key']} kept changing while its content was stored")

    def _new_record(
        self: Store, bucket, key, object_id, size, etag, content_type, metadata, headers, posix, xattrs, tags
    ) -> dict[str, Any]:
        now = self.clock.now()
        posix = dict(posix or {})
        posix.setdefault("mode", 0o100644 if not key.endswith("/") else 0o040755)
        posix.setdefault("uid", 0)
        posix.setdefault("gid", 0)
        posix.setdefault("mtime_ns", int(now * 1e9))
        return {
            "id": object_id,
            "bucket": bucket,
            "key": key,
            "version": "null",
            "seq": 0,
            "size": size,
            "etag": etag,
            "ctype": content_type or "application/octet-stream",
            "meta": dict(metadata or {}),
            "headers": {
                k: v for k, v in (headers or {}).items() if k in STANDARD_HEADERS or k.startswith(CHECKSUM_HEADER_PREFIX)
            },
            "posix": posix,
            "xattrs": dict(xattrs or {}),
            "tags": dict(tags or {}),
            "created": now,
            "gen": 0,
            "parts": [],
            "mp": 0,
            "retention": None,
            "legal_hold": False,
            "delete_marker": False,
        }

    def _commit_put(
        self: Store,
        settings: dict[str, Any],
        record: dict[str, Any],
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        principal: Principal | None = None,
        within: Any = None,
        if_unchanged: ObjectInfo | None = None,
    ) -> None:
        """Make ``record`` the current version in one write transaction; tombstone what it retired.

        ``within(txn)``, if given, runs inside the same transaction.
        """
        bucket, key = record["bucket"], record["key"]

        def change(txn: Txn) -> list[dict[str, Any]]:
            settings = txn.get("buckets", bucket.encode())
            if settings is None:
                raise NoSuchBucket(f"bucket {bucket!r} does not exist")
            okey = object_key(bucket, key)
            old = txn.get("objects", okey)
            live = old if old is not None and not old.get("delete_marker") else None
            check_write_conditions(bucket, key, live, if_match, if_none_match)
            if if_unchanged is not None and (
                live is None or live["id"] != if_unchanged.object_id or live.get("gen") != if_unchanged.record.get("gen")
            ):
                raise PreconditionFailed(f"{bucket}/{key} changed since it was read")
            record["seq"] = max(record["seq"], (old or {}).get("seq", 0) + 1)
            garbage = self._retire_current(txn, settings, old, principal)
            record["version"] = record["id"] if settings.get("versioning") == "Enabled" else "null"
            txn.put("objects", okey, record)
            for indexer in self.indexers:
                indexer.on_change(txn, live, record)
            self._records_changed(txn, None, record)
            if within is not None:
                within(txn)
            return garbage

        self._retire_files(self.index.commit(change))

    def _records_changed(self: Store, txn: Txn, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        """Inside the commit: tell the indexers that want every record (``on_record``) of one written.

        ``old`` None: ``new`` is a new version or delete marker; otherwise
        ``new`` replaces ``old`` (same id: tags, retention, attributes, a move).
        """
        for indexer in self.indexers:
            hook = getattr(indexer, "on_record", None)
            if hook is not None:
                hook(txn, old, new)

    def _retire_current(
        self: Store, txn: Txn, settings: dict[str, Any], old: dict[str, Any] | None, principal: Principal | None
    ) -> list[dict[str, Any]]:
        """Move the current record aside (to versions, or to garbage) before a new one replaces it.

        Returns the records whose blobs are to be deleted after the commit.
        """
        if old is None:
            return []
        versioning = settings.get("versioning")
        if versioning == "Enabled" or (versioning == "Suspended" and old["version"] != "null"):
            txn.put("versions", version_key(old["bucket"], old["key"], old["seq"]), old)
            return []
        check_lock(old, self.clock.now(), principal, False)
        garbage = [old]
        if versioning == "Suspended":
            garbage += self._drop_null_versions(txn, old["bucket"], old["key"], principal)
        self._queue_gc(txn, garbage)
        return garbage

    def _drop_null_versions(self: Store, txn: Txn, bucket: str, key: str, principal) -> list[dict[str, Any]]:
        prefix = object_key(bucket, key) + b"\0"
        dropped = []
        for vkey, rec in list(txn.scan("versions", prefix)):
            if rec["key"] == key and rec["version"] == "null":
                check_lock(rec, self.clock.now(), principal, False)
                txn.delete("versions", vkey)
                dropped.append(rec)
        return dropped

    # -- reads ------------------------------------------------------------------

    @guarded("head")
    def head_object(
        self: Store, bucket: str, key: str, version_id: str | None = None, *, principal: Principal | None = None
    ) -> ObjectInfo:
        """The record of the current version (or ``version_id``).

        Raises NoSuchKey (also when the current version is a delete marker)
        or NoSuchVersion.
        """
        check_key(key)
        with self.index.read() as txn:
            self._bucket(txn, bucket)
            record = self._find(txn, bucket, key, version_id)
        return ObjectInfo.from_record(record)

    def _find(self: Store, txn: Txn, bucket: str, key: str, version_id: str | None) -> dict[str, Any]:
        current = txn.get("objects", object_key(bucket, key))
        if version_id is None:
            if current is None or current.get("delete_marker"):
                err = NoSuchKey(f"{bucket}/{key} does not exist")
                err.delete_marker = current is not None  # type: ignore[attr-defined]
                raise err
            return current
        if current is not None and current["version"] == version_id:
            return current
        for _, rec in txn.scan("versions", object_key(bucket, key) + b"\0"):
            if rec["version"] == version_id and rec["key"] == key:
                return rec
        raise NoSuchVersion(f"{bucket}/{key} has no version {version_id!r}")

    @audited("read", durable=False)
    def open_object(
        self: Store,
        bucket: str,
        key: str,
        version_id: str | None = None,
        *,
        principal: Principal | None = None,
        customer_key: bytes | None = None,
    ) -> ObjectReader:
        """A reader of the current version (or ``version_id``); raises like head_object.

        An SSE-C object needs its ``customer_key`` (EncryptionKeyRequired,
        EncryptionKeyMismatch otherwise).
        """
        info = self.head_object(bucket, key, version_id)
        if info.delete_marker:
            raise InvalidArgument("a delete marker has no body")
        reader = ObjectReader(self, info, principal, customer_key=customer_key)
        self.note_read(info.record)  # a cold version may be promoted, later, by the mover (mover.py)
        return reader

    def open_record(
        self: Store, record: dict[str, Any], *, principal: Principal | None = None, customer_key: bytes | None = None
    ) -> ObjectReader:
        """A reader of a record already in hand (e.g. from a listing)."""
        reader = ObjectReader(self, ObjectInfo.from_record(record), principal, customer_key=customer_key)
        self.note_read(record)
        return reader

    def record_is_live(self: Store, record: dict[str, Any]) -> bool:
        """Whether ``record``'s version is still in the index (current or noncurrent)."""
        with self.index.read() as txn:
            current = txn.get("objects", object_key(record["bucket"], record["key"]))
            if current is not None and current["id"] == record["id"]:
                return True
            return txn.get("versions", version_key(record["bucket"], record["key"], record["seq"])) is not None

    def get_object_bytes(
        self: Store, bucket: str, key: str, version_id: str | None = None, *, customer_key: bytes | None = None
    ) -> bytes:
        """The whole body in memory: for small objects and tests only."""
        with self.open_object(bucket, key, version_id, customer_key=customer_key) as reader:
            return reader.readall()

    # -- deletes, copies, renames ------------------------------------------------

    @audited("delete")
    def delete_object(
        self: Store,
        bucket: str,
        key: str,
        version_id: str | None = None,
        *,
        principal: Principal | None = None,
        bypass_governance: bool = False,
        if_match: str | None = None,
    ) -> dict[str, Any]:
        """Delete the current object (a delete marker in versioned buckets) or one version.

        Returns ``{"version_id": ..., "delete_marker": bool}``. Raises NoSuchKey
        when there is nothing to delete, ObjectLocked when WORM forbids it.
        ``if_match`` makes the delete conditional on the ETag of what it
        deletes (the current version, or ``version_id``): PreconditionFailed
        when it differs, NoSuchKey when there is no such object (S3's rules).
        Durable when it returns.
        """
        check_key(key)
        garbage: list[dict[str, Any]] = []
        result: dict[str, Any]
        marker = None
        if version_id is None:
            with self.index.read() as txn:
                versioning = self._bucket(txn, bucket).get("versioning")
            if versioning is not None:
                marker = self._new_record(bucket, key, new_id(), 0, "", None, None, None, None, None, None)
                marker["delete_marker"] = True
                marker["version"] = marker["id"] if versioning == "Enabled" else "null"
                marker["seq"] = time.time_ns()
        wheres = [{"id": marker["id"], "bucket": bucket, "key": key, "gen": 0}] if marker is not None else []
        with self._meta_change(wheres):  # a marker the index refuses must not stay on the drives
            if marker is not None:
                self._write_meta_files(marker)
            with self.index.write() as txn:
                settings = self._bucket(txn, bucket)
                okey = object_key(bucket, key)
                current = txn.get("objects", okey)
                now = self.clock.now()
                if version_id is None:
                    if if_match is not None:
                        live = current if current is not None and not current.get("delete_marker") else None
                        check_write_conditions(bucket, key, live, if_match, False)
                    versioning = settings.get("versioning")
                    if versioning is None:
                        if current is None:
                            raise NoSuchKey(f"{bucket}/{key} does not exist")
                        check_lock(current, now, principal, bypass_governance)
                        txn.delete("objects", okey)
                        garbage = [current]
                        self._queue_gc(txn, garbage, override=lock_active(current, now))
                        result = {"version_id": None, "delete_marker": False}
                    else:
                        if marker is None:
                            raise PreconditionFailed("the bucket's versioning changed during the delete; try again")
                        garbage = self._retire_current(txn, settings, current, principal) if current else []
                        marker["version"] = marker["id"] if versioning == "Enabled" else "null"
                        marker["seq"] = max(marker["seq"], (current or {}).get("seq", 0) + 1)
                        txn.put("objects", okey, marker)
                        result = {"version_id": marker["version"], "delete_marker": True}
                        self._records_changed(txn, None, marker)
                    for indexer in self.indexers:
                        indexer.on_change(txn, current if current and not current.get("delete_marker") else None, None)
                else:
                    target = self._find(txn, bucket, key, version_id)
                    if if_match is not None:
                        live = None if target.get("delete_marker") else target
                        check_write_conditions(bucket, key, live, if_match, False)
                    check_lock(target, now, principal, bypass_governance)
                    if current is not None and current["version"] == version_id:
                        txn.delete("objects", okey)
                        promoted = None
                        for vkey, rec in txn.scan("versions", okey + b"\0"):
                            if rec["key"] == key:
                                promoted = (vkey, rec)
                                break
                        if promoted:
                            txn.delete("versions", promoted[0])
                            txn.put("objects", okey, promoted[1])
                        for indexer in self.indexers:
                            newcur = promoted[1] if promoted and not promoted[1].get("delete_marker") else None
                            indexer.on_change(txn, None if target.get("delete_marker") else target, newcur)
                    else:
                        txn.delete("versions", version_key(bucket, key, target["seq"]))
                    garbage = [target]
                    self._queue_gc(txn, garbage, override=lock_active(target, now))
                    result = {"version_id": version_id, "delete_marker": bool(target.get("delete_marker"))}
        self._retire_files(garbage)
        return result

    @audited(
        "copy",
        target=lambda a, k, r: {"bucket": a[2], "key": a[3], "source": f"{a[0]}/{a[1]}", "version": r.version_id if r else None},
        scope=lambda store, a, k: [("copy", a[2]), ("read", a[0])],
    )
    def copy_object(
        self: Store,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        version_id: str | None = None,
        replace_metadata: bool = False,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
        if_modified_since: float | None = None,
        if_unmodified_since: float | None = None,
        retention: dict[str, Any] | None = None,
        legal_hold: bool = False,
        acl: str | list[dict[str, str]] | None = None,
        principal: Principal | None = None,
        source_customer_key: bytes | None = None,
        encryption: Encryption | None = None,
        tier: str | None = None,
    ) -> ObjectInfo:
        """Copy an object's bytes into a new object (streamed, re-encoded).

        Metadata, content type and standard headers are copied unless
        ``replace_metadata``; the copy-source conditions are checked first.
        ``retention`` and ``legal_hold`` apply to the new version as in
        :meth:`put_object` (the source's lock is never copied, as in S3).
        An SSE-C source needs ``source_customer_key``; the copy is encrypted
        as ``encryption`` says, else by the destination bucket's default (as
        in S3: a copy does not inherit its source's encryption).
        """
        with self.open_object(src_bucket, src_key, version_id, customer_key=source_customer_key) as reader:
            src = reader.info
            etag = '"' + src.etag + '"'
            if if_match is not None and if_match not in (etag, src.etag, "*"):
                raise PreconditionFailed("x-amz-copy-source-if-match failed")
            if if_none_match is not None and if_none_match in (etag, src.etag, "*"):
                raise PreconditionFailed("x-amz-copy-source-if-none-match failed")
            if if_unmodified_since is not None and src.modified > if_unmodified_since + 1:
                raise PreconditionFailed("x-amz-copy-source-if-unmodified-since failed")
            if if_modified_since is not None and src.modified <= if_modified_since and if_none_match is None:
                raise PreconditionFailed("x-amz-copy-source-if-modified-since failed")
            if not replace_metadata:
                content_type, metadata, headers = src.content_type, src.metadata, src.headers
            return self.put_object(
                dst_bucket,
                dst_key,
                IterStream(reader.iter_range()),
                length=src.size,
                content_type=content_type,
                metadata=metadata,
                headers=headers,
                tags=src.tags if tags is None else tags,
                posix=src.posix if not replace_metadata else None,
                xattrs=src.xattrs,
                retention=retention,
                legal_hold=legal_hold,
                acl=acl,
                principal=principal,
                encryption=encryption,
                tier=tier,
            )
