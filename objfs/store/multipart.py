"""Multipart uploads: parts are blobs kept durably until the upload completes.

Completion is atomic and moves no data: the new record lists the parts'
blobs in order, and one transaction makes it current and retires the upload.
"""

from __future__ import annotations

import hashlib
import io
import time
from typing import TYPE_CHECKING, Any, BinaryIO

from . import crypto
from .audit import audited, guarded
from .blobs import BlobReader, BlobWriter, new_id
from .crypto import Encryption
from .errors import (
    EntityTooSmall,
    InvalidArgument,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    NoSuchUpload,
)
from .fragments import read_meta
from .index import Txn, object_key
from .locks import check_new_retention
from .names import check_key
from .objects import CHECKSUM_HEADER_PREFIX, HEAD_BYTES, IterStream, ObjectInfo, merge_indexed
from .policy import check_acl, check_public_acl_allowed

if TYPE_CHECKING:
    from .engine import Principal, Store

MIN_PART_SIZE = 5 << 20
MAX_PARTS = 10000
#: How long a completed upload id is remembered, so a client retrying a
#: Complete whose answer it lost gets the same success (not NoSuchUpload).
COMPLETED_MEMORY = 24 * 3600
_FORGET_PER_COMMIT = 100  # expired memories dropped per completion: bounded work per commit


def _part_key(upload_id: str, number: int) -> bytes:
    return upload_id.encode() + b"\0" + number.to_bytes(4, "big")


def _in_upload(action: str):
    """The access scope of a call naming an upload: ``action`` on the upload's bucket."""
    return lambda store, args, kwargs: [(action, store.get_upload(args[0])["bucket"])]


def _in_upload_or_completed(action: str):
    """Like :func:`_in_upload`, for an upload that may have just completed."""
    return lambda store, args, kwargs: [(action, store.upload_destination(args[0])[0])]


def _upload_target(args: tuple, kwargs: dict, result: Any) -> dict[str, Any]:
    return {"upload": args[0]}


class MultipartMixin:
    """Multipart upload operations of :class:`objfs.store.Store`."""

    min_part_size = MIN_PART_SIZE

    @guarded("upload")
    def create_multipart(
        self: Store,
        bucket: str,
        key: str,
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        retention: dict[str, Any] | None = None,
        legal_hold: bool = False,
        posix: dict[str, int] | None = None,
        acl: str | list[dict[str, str]] | None = None,
        principal: Principal | None = None,
        encryption: Encryption | None = None,
        tier: str | None = None,
    ) -> str:
        """Start an upload; returns its id. Durable when it returns.

        ``acl`` (canned or grants, :mod:`.policy`) and the principal's account become the object's at completion.
        The encryption (``encryption``, else the bucket's default) is decided
        now: every part is encrypted with the upload's one data key. Every
        part is written to ``tier`` (default: the first tier).
        """
        check_key(key)
        tier = self.config.tier(tier).name if tier else self.config.hot.name
        check_new_retention(retention, self.clock.now())
        if acl is not None:
            acl = check_acl(acl)
        with self.index.read() as txn:
            settings = self._bucket(txn, bucket)
            if acl is not None:
                check_public_acl_allowed(settings, acl)
            sse, _ = crypto.for_write(self.encryption, settings, encryption)
        upload_id = new_id()
        upload = {
            "id": upload_id,
            "bucket": bucket,
            "key": key,
            "created": self.clock.now(),
            "ctype": content_type,
            "meta": dict(metadata or {}),
            "headers": dict(headers or {}),
            "tags": dict(tags or {}),
            "retention": retention,
            "legal_hold": legal_hold,
            "posix": dict(posix or {}),
            "tier": tier,
        }
        if acl is not None and acl != "private":
            upload["acl"] = acl
        if principal is not None and principal.account:
            upload["owner"] = principal.account
        if sse is not None:
            upload["sse"] = sse  # wrapped only; in the upload's meta files too, for rebuild-index
        with self.index.read() as txn:
            self._bucket(txn, bucket)
        meta = {"id": upload_id, "bucket": bucket, "key": key, "upload": upload, "gen": time.time_ns()}
        with self._meta_change([{"id": upload_id, "bucket": bucket, "key": key, "gen": meta["gen"]}]):
            # The drives learn of the upload first, so rebuild-index restores unfinished uploads.
            self._write_meta_files(meta)
            with self.index.write() as txn:
                self._bucket(txn, bucket)
                txn.put("uploads", upload_id.encode(), upload)
        return upload_id

    def get_upload(self: Store, upload_id: str) -> dict[str, Any]:
        with self.index.read() as txn:
            return self._upload(txn, upload_id)

    def upload_destination(self: Store, upload_id: str) -> tuple[str, str]:
        """(bucket, key) of an unfinished or recently completed upload; NoSuchUpload otherwise."""
        with self.index.read() as txn:
            upload = txn.get("uploads", upload_id.encode()) if upload_id else None
            if upload is None:
                upload = self._completed(txn, upload_id)
            if upload is None:
                raise NoSuchUpload(f"upload {upload_id!r} does not exist")
            return upload["bucket"], upload["key"]

    def _completed(self: Store, txn: Txn, upload_id: str) -> dict[str, Any] | None:
        """What the completion of ``upload_id`` made, if it completed less than COMPLETED_MEMORY ago."""
        done = txn.get("completed", b"u" + upload_id.encode()) if upload_id else None
        if done is None or done["at"] < self.clock.now() - COMPLETED_MEMORY:
            return None
        return done

    def _remember_completion(self: Store, txn: Txn, upload_id: str, record: dict[str, Any]) -> None:
        """Note what ``upload_id`` became, and forget the oldest notes past COMPLETED_MEMORY."""
        now = self.clock.now()
        done = {k: record[k] for k in ("id", "bucket", "key", "version", "size", "etag", "ctype", "created", "mp")}
        done["at"] = now
        txn.put("completed", b"u" + upload_id.encode(), done)
        txn.put("completed", b"t" + int(now * 1e9).to_bytes(8, "big") + upload_id.encode(), b"")
        horizon = int((now - COMPLETED_MEMORY) * 1e9).to_bytes(8, "big")
        expired = []
        for tkey in txn.scan_keys("completed", b"t"):
            if tkey[1:9] >= horizon or len(expired) >= _FORGET_PER_COMMIT:
                break
            expired.append(tkey)
        for tkey in expired:
            txn.delete("completed", tkey)
            txn.delete("completed", b"u" + tkey[9:])

    def _upload(self: Store, txn: Txn, upload_id: str) -> dict[str, Any]:
        upload = txn.get("uploads", upload_id.encode()) if upload_id else None
        if upload is None:
            raise NoSuchUpload(f"upload {upload_id!r} does not exist")
        return upload

    @guarded("upload", target=_upload_target, scope=_in_upload("upload"))
    def upload_part(
        self: Store,
        upload_id: str,
        number: int,
        body: BinaryIO | bytes,
        *,
        length: int | None = None,
        content_md5: bytes | None = None,
        verify: Any = None,
        checksums: dict[str, str] | None = None,
        principal: Principal | None = None,
        customer_key: bytes | None = None,
    ) -> dict[str, Any]:
        """Store part ``number`` (1..10000), replacing an earlier one. Durable when it returns.

        ``checksums`` (a front's digests of the part, e.g. S3's
        ``x-amz-checksum-*``) are kept with the part; the dict is read after
        ``verify`` ran, which may fill it in. Returns ``{"number", "etag", "size"}``.
        The part is encrypted with the upload's data key; an SSE-C upload
        needs its ``customer_key``.
        """
        if not 1 <= number <= MAX_PARTS:
            raise InvalidArgument(f"part number must be between 1 and {MAX_PARTS}")
        if isinstance(body, (bytes, bytearray)):
            length = len(body) if length is None else length
            body = io.BytesIO(body)
        upload = self.get_upload(upload_id)
        data_key = self.encryption.data_key(upload["sse"], customer_key) if upload.get("sse") else None
        tier = upload.get("tier") if upload.get("tier") in self.drives else self.config.hot.name
        writer = BlobWriter(self, tier, data_key=data_key)
        created = self.clock.now()
        try:
            etag, _ = writer.ingest(body, length, content_md5=content_md5, verify=verify)
            # The footer makes the part self-describing: rebuild-index restores it (newest seq wins).
            owner = {"upload": upload_id, "part": number, "etag": etag, "seq": time.time_ns(), "created": created}
            if checksums:
                owner["checksums"] = dict(checksums)
            desc = writer.finish(owner)
        except BaseException:
            writer.discard()
            raise
        part = {"number": number, "etag": etag, "size": desc["size"], "blob": desc, "created": created}
        if checksums:
            part["checksums"] = dict(checksums)
        try:
            with self.index.write() as txn:
                self._upload(txn, upload_id)
                old = txn.get("parts", _part_key(upload_id, number))
                txn.put("parts", _part_key(upload_id, number), part)
                if old is not None:
                    self._queue_blob_gc(txn, [old["blob"]], upload_id)
        except BaseException:
            writer.discard()
            raise
        writer.committed()
        return {"number": number, "etag": part["etag"], "size": part["size"]}

    def upload_part_copy(
        self: Store,
        upload_id: str,
        number: int,
        src_bucket: str,
        src_key: str,
        *,
        version_id: str | None = None,
        start: int = 0,
        end: int | None = None,
        principal: Principal | None = None,
        customer_key: bytes | None = None,
        source_customer_key: bytes | None = None,
    ) -> dict[str, Any]:
        """Store part ``number`` as bytes ``[start, end)`` of an object version (S3 UploadPartCopy).

        The source is opened as ``principal``, so the read is audited.
        Durable when it returns; returns like :meth:`upload_part`.
        ``source_customer_key`` opens an SSE-C source, ``customer_key`` is
        the upload's own (SSE-C uploads).
        """
        upload = self.get_upload(upload_id)
        if upload.get("sse"):
            self.encryption.data_key(upload["sse"], customer_key)  # refused before the source is read
        with self.open_object(src_bucket, src_key, version_id, principal=principal, customer_key=source_customer_key) as reader:
            size = reader.info.size
            end = size if end is None else end
            if not 0 <= start <= end <= size:
                raise InvalidRange(f"bytes {start}-{end} are not within the {size} bytes of {src_bucket}/{src_key}")
            return self.upload_part(
                upload_id, number, IterStream(reader.iter_range(start, end)), length=end - start, customer_key=customer_key
            )

    @guarded("list", target=_upload_target, scope=_in_upload("list"))
    def list_parts(
        self: Store, upload_id: str, marker: int = 0, max_parts: int = 1000, *, principal: Principal | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
        """(upload, parts after ``marker``, truncated)."""
        with self.index.read() as txn:
            upload = self._upload(txn, upload_id)
            parts = []
            truncated = False
            for _, part in txn.scan("parts", upload_id.encode() + b"\0", start=_part_key(upload_id, marker + 1)):
                if len(parts) >= max_parts:
                    truncated = True
                    break
                parts.append({k: part[k] for k in ("number", "etag", "size", "created")})
                parts[-1]["checksums"] = dict(part.get("checksums") or {})
        return upload, parts, truncated

    @guarded("list", target=lambda a, k, r: {"bucket": a[0]})
    def list_uploads(self: Store, bucket: str, prefix: str = "", *, principal: Principal | None = None) -> list[dict[str, Any]]:
        """Unfinished uploads of a bucket, by key then creation time."""
        with self.index.read() as txn:
            self._bucket(txn, bucket)
            uploads = [u for _, u in txn.scan("uploads") if u["bucket"] == bucket and u["key"].startswith(prefix)]
        return sorted(uploads, key=lambda u: (u["key"], u["created"]))

    @guarded("upload", target=_upload_target, scope=_in_upload("upload"))
    def abort_multipart(self: Store, upload_id: str, *, principal: Principal | None = None) -> None:
        """Forget the upload and delete its parts. Durable when it returns."""
        upload = self.get_upload(upload_id)
        where = {"id": upload_id, "bucket": upload["bucket"], "key": upload["key"], "gen": time.time_ns()}
        with self._meta_change([where]):  # killed before the tombstone: scrub writes it from the index
            with self.index.write() as txn:
                upload = self._upload(txn, upload_id)
                parts = [p for _, p in txn.scan("parts", upload_id.encode() + b"\0")]
                for part in parts:
                    txn.delete("parts", _part_key(upload_id, part["number"]))
                self._queue_blob_gc(txn, [p["blob"] for p in parts], upload_id)
                txn.delete("uploads", upload_id.encode())
            # Before this returns: the drives say the upload is gone, so rebuild-index does not restore it.
            self._retire_files([{"id": upload_id, "bucket": upload["bucket"], "key": upload["key"], "version": "", "seq": 0}])

    @audited(
        "write",
        target=lambda a, k, r: {"bucket": r.bucket, "key": r.key, "version": r.version_id} if r else {"upload": a[0]},
        scope=_in_upload_or_completed("write"),
    )
    def complete_multipart(
        self: Store,
        upload_id: str,
        parts: list[tuple[int, str]],
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        checksum_headers: Any = None,
        principal: Principal | None = None,
        customer_key: bytes | None = None,
    ) -> ObjectInfo:
        """Assemble the listed parts into the object, atomically. Durable when it returns.

        The object keeps the upload's encryption. Indexers see the plaintext
        head, except for an SSE-C upload completed without its ``customer_key``
        (S3 does not require it there), which is then not indexed.
        ``checksum_headers(upload, parts)``, if given, is called with the
        upload and the chosen parts (``number``, ``size``, ``etag``,
        ``checksums``) before anything is written; it returns the whole
        object's checksum headers to store in place of the upload's own
        ``x-amz-checksum-*`` headers, or raises to refuse the completion.

        Raises InvalidPartOrder, InvalidPart (missing part or ETag mismatch),
        EntityTooSmall (a part but the last below the minimum size).
        ``if_match`` / ``if_none_match`` are checked against the key's live
        version in the committing transaction, as for :meth:`put_object`; a
        refused completion leaves the upload as it was, so it can be retried.
        Completing an upload that completed less than COMPLETED_MEMORY ago
        returns what that completion made (a client retrying after a lost
        answer gets the same success).
        """
        repeated = self._repeated_completion(upload_id)
        if repeated is not None:
            return repeated
        if not parts:
            raise InvalidPart("at least one part is needed")
        numbers = [n for n, _ in parts]
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            raise InvalidPartOrder("parts must be listed in ascending order, each once")
        with self.index.read() as txn:
            upload = self._upload(txn, upload_id)
            settings = self._bucket(txn, upload["bucket"])
            stored = {p["number"]: p for _, p in txn.scan("parts", upload_id.encode() + b"\0")}
        chosen = []
        for i, (number, etag) in enumerate(parts):
            part = stored.get(number)
            if part is None or part["etag"] != etag.strip('"'):
                raise InvalidPart(f"part {number} was not uploaded or its ETag differs")
            if i < len(parts) - 1 and part["size"] < self.min_part_size:
                raise EntityTooSmall(f"part {number} is {part['size']} bytes; parts but the last need {self.min_part_size}")
            chosen.append(part)
        etag = hashlib.md5(b"".join(bytes.fromhex(p["etag"]) for p in chosen)).hexdigest() + f"-{len(chosen)}"
        headers = upload["headers"]
        if checksum_headers is not None:
            summaries = [
                {"number": p["number"], "size": p["size"], "etag": p["etag"], "checksums": dict(p.get("checksums") or {})}
                for p in chosen
            ]
            headers = {k: v for k, v in headers.items() if not k.startswith(CHECKSUM_HEADER_PREFIX)}
            headers.update(checksum_headers(upload, summaries))
        record = self._new_record(
            upload["bucket"],
            upload["key"],
            upload_id,
            sum(p["size"] for p in chosen),
            etag,
            upload["ctype"],
            upload["meta"],
            headers,
            upload["posix"],
            None,
            upload["tags"],
        )
        record["parts"] = [p["blob"] for p in chosen]
        record["mp"] = len(chosen)
        if any(p.get("checksums") for p in chosen):
            # Kept so each part's checksum can still be told (S3 GetObjectAttributes).
            record["part_checksums"] = [dict(p.get("checksums") or {}) for p in chosen]
        retention = upload.get("retention")
        if retention is None and settings.get("object_lock") and settings.get("lock_default"):
            default = settings["lock_default"]
            retention = {"mode": default["mode"], "until": self.clock.now() + default["seconds"], "source": "default"}
        record["retention"] = retention
        record["legal_hold"] = bool(upload.get("legal_hold"))
        for name in ("acl", "owner"):
            if upload.get(name):
                record[name] = upload[name]
        sse = upload.get("sse")
        data_key = None
        if sse is not None:
            record["sse"] = sse
            if sse["mode"] != "C" or customer_key is not None:
                data_key = self.encryption.data_key(sse, customer_key)
        if sse is None or data_key is not None:
            head = self._head_bytes(record, data_key)
            for indexer in self.indexers:
                merge_indexed(record, indexer.extract(head, record["key"]))
        record["seq"] = record["gen"] = time.time_ns()  # newer than the upload's own meta on the drives
        unused = [p["blob"] for n, p in stored.items() if n not in set(numbers)]

        def retire_upload(txn: Txn) -> None:
            self._upload(txn, upload_id)
            for number in stored:
                txn.delete("parts", _part_key(upload_id, number))
            self._queue_blob_gc(txn, unused, upload_id)
            txn.delete("uploads", upload_id.encode())
            self._remember_completion(txn, upload_id, record)

        where = {"id": upload_id, "bucket": upload["bucket"], "key": upload["key"], "gen": record["gen"]}
        with self._meta_change([where]):
            self._write_meta_files(record)
            self._commit_put(
                settings, record, if_match=if_match, if_none_match=if_none_match, principal=principal, within=retire_upload
            )
        self._forget_upload_meta(upload_id)
        if record.get("retention") or record.get("legal_hold"):
            self._protect_files(record, True)
        return ObjectInfo.from_record(record)

    def _repeated_completion(self: Store, upload_id: str) -> ObjectInfo | None:
        """The result of an earlier completion of ``upload_id`` (None if it is unfinished or unknown)."""
        with self.index.read() as txn:
            if upload_id and txn.get("uploads", upload_id.encode()) is not None:
                return None
            done = self._completed(txn, upload_id)
            if done is None:
                return None
            current = txn.get("objects", object_key(done["bucket"], done["key"]))
            if current is not None and current["id"] == done["id"]:
                return ObjectInfo.from_record(current)
        # Replaced since: what the completion made is still what it answers.
        return ObjectInfo(
            bucket=done["bucket"],
            key=done["key"],
            version_id=done["version"],
            size=done["size"],
            etag=done["etag"],
            content_type=done["ctype"],
            modified=done["created"],
            parts_count=done["mp"],
            object_id=done["id"],
        )

    def _forget_upload_meta(self: Store, upload_id: str) -> None:
        """After completion: the upload's own meta files are superseded by the record's; remove them."""
        for drive in self._meta_drives({"id": upload_id}):
            path = drive.meta_path(upload_id)
            meta = read_meta(path)
            if meta is not None and "upload" in meta:
                try:
                    path.unlink()
                except OSError:
                    pass

    def _head_bytes(self: Store, record: dict[str, Any], data_key: bytes | None = None) -> bytes:
        out = bytearray()
        for desc in record["parts"]:
            reader = BlobReader(self, desc, data_key=data_key)
            try:
                for chunk in reader.iter_range(0, min(desc["size"], HEAD_BYTES - len(out)), prefetch=False):
                    out += chunk
            finally:
                reader.close()
            if len(out) >= HEAD_BYTES:
                break
        return bytes(out)
