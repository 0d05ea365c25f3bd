"""The object resource: Put/Get/Head/Delete/CopyObject and DeleteObjects.

Bodies stream both ways: PUT feeds the engine from the receive channel
(:mod:`s3sidecar.bodies`) and GET sends a few segments at a time (up to
:data:`GET_BATCH_BYTES`), each batch read in one worker-thread call, so
memory per request is a few segments whatever the size.
Objects up to ``Settings.inline_get_bytes`` are opened and read in a single
engine call, which keeps small GETs to one thread hop.

Every GET and HEAD opens the object as ``req.principal``, so the engine's
audit trail records who read what (``objfs audit show --reads-only``).
Writes and deletes pass the principal too, and the ``x-amz-object-lock-*``
and bypass headers are translated by :mod:`.lock`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import trio
from starlette.responses import Response

from objfs.store import ObjectInfo, Store
from objfs.store import errors as E

from .. import errors as S3
from .. import sse
from ..bridge import Engine, s3_error_for
from ..conditional import check_read_conditions, parse_range
from ..context import S3Request, decode_copy_source, empty_response, quote_etag, xml_response
from ..xmlio import build, http_date, iso8601, parse_delete_objects
from .access import canned_acl
from .lifecycle import storage_class_headers, storage_tier
from .lock import lock_headers_of, refuse_delete_marker, require_object_lock, response_lock_headers
from .replication import put_replica, replica_descriptor, status_headers

CHECKSUM_PREFIX = "x-amz-checksum-"
log = logging.getLogger(__name__)
RESPONSE_OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}


def header_value(value: str) -> str:
    """A header value HTTP can carry: non-Latin-1 text is sent RFC 2047-encoded, as S3 does."""
    try:
        value.encode("latin-1")
        return value
    except UnicodeEncodeError:
        import base64

        return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def object_headers(info: ObjectInfo, *, checksums: bool) -> dict[str, str]:
    """Response headers describing an object (GET and HEAD)."""
    headers = {
        "etag": quote_etag(info.etag),
        "last-modified": http_date(info.modified),
        "content-type": header_value(info.content_type),
        "accept-ranges": "bytes",
    }
    for name, value in info.headers.items():
        if name.startswith(CHECKSUM_PREFIX):
            if checksums:
                headers[name] = value
                # Stored for multipart objects (COMPOSITE or FULL_OBJECT); a single PUT's is of the whole body.
                headers["x-amz-checksum-type"] = info.headers.get("x-amz-checksum-type", "FULL_OBJECT")
        else:
            headers[name] = header_value(value)
    for name, value in info.metadata.items():
        headers["x-amz-meta-" + name] = header_value(value)
    if info.tags:
        headers["x-amz-tagging-count"] = str(len(info.tags))
    if info.version_id != "null":
        headers["x-amz-version-id"] = info.version_id
    if info.parts_count:
        headers["x-amz-mp-parts-count"] = str(info.parts_count)
    headers.update(response_lock_headers(info))
    return headers


class _Read:
    """What a GET/HEAD resolved to: the object, the range, and the bytes or an open reader.

    For a streamed body, ``chunks`` is the reader's iterator with its first
    segment already read (``first``): a read that fails at the start fails
    before any status line is sent.
    """

    def __init__(
        self,
        info: ObjectInfo,
        span: tuple[int, int] | None,
        data: bytes | None,
        reader: Any,
        chunks: Iterator[bytes] | None = None,
        first: bytes = b"",
    ) -> None:
        self.info = info
        self.span = span
        self.data = data
        self.reader = reader
        self.chunks = chunks
        self.first = first


def _open_for_read(req: S3Request, body: bool) -> _Read:
    """In a worker thread: open, check conditions and range, and read small bodies at once.

    HEAD opens the object too (opening touches no fragment file: readers open
    them on the first read; SSE-C keys are checked there); its audit line is a
    ``head``, GET's the one ``read``.
    """
    store: Store = req.store
    version = req.version_id()
    h = req.headers
    if version is not None:
        # A delete marker has a version id but no body: S3 answers 405, not 404.
        refuse_delete_marker(store.head_object(req.bucket, req.key, version))
    customer_key = sse.read_customer_key(h)
    if body:
        reader = store.open_object(req.bucket, req.key, version, principal=req.principal, customer_key=customer_key)
    else:
        # HEAD discloses the metadata, not the body: audited as "head", so a download
        # (HEAD, then GET) is one read line. Opening touches no fragment file.
        store.authorize(req.principal, "head", req.bucket, req.key)
        reader = store.open_object(req.bucket, req.key, version, customer_key=customer_key)
        if req.principal is not None:
            store.record_audit("head", req.principal, "ok", False, bucket=req.bucket, key=req.key, version=reader.info.version_id)
    try:
        info = reader.info
        sse.refuse_needless_key(info.record, customer_key)
        if not body:
            reader.close()
            reader = None
        check_read_conditions(
            info,
            h.get("if-match"),
            h.get("if-none-match"),
            req.http_date_header("if-modified-since"),
            req.http_date_header("if-unmodified-since"),
        )
        span = _span(req, info)
        data = None
        if reader is None:
            return _Read(info, span, None, None)
        start, end = span if span is not None else (0, info.size)
        if end - start <= req.settings.inline_get_bytes:
            data = b"".join(reader.iter_range(start, end))
            reader.close()
            return _Read(info, span, data, None)
        chunks = reader.iter_range(start, end)
        return _Read(info, span, None, reader, chunks, next(chunks, b""))
    except BaseException:
        if reader is not None:
            reader.close()
        raise


def _part_number(req: S3Request) -> int | None:
    text = req.query.get("partNumber")
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 10000:
        raise S3.InvalidArgument(
            "Part number must be an integer between 1 and 10000, inclusive", ArgumentName="partNumber", ArgumentValue=text
        )
    if "range" in req.headers:
        raise S3.InvalidRequest("Cannot specify both Range header and partNumber query parameter")
    return int(text)


def _span(req: S3Request, info: ObjectInfo) -> tuple[int, int] | None:
    """The bytes a GET/HEAD asks for: a Range, or a part (``?partNumber=N``); None for all."""
    number = _part_number(req)
    if number is None:
        return parse_range(req.headers.get("range"), info.size)
    start, end = info.part_range(number)
    # An empty object has no byte range to name: it is answered whole.
    return (start, end) if end > start else None


def _not_found(req: S3Request, exc: S3.S3Error) -> S3.S3Error:
    cause = exc.__cause__
    if isinstance(cause, E.NoSuchKey) and getattr(cause, "delete_marker", False):
        exc.headers["x-amz-delete-marker"] = "true"
    exc.fields.setdefault("Key", req.key or "")
    return exc


async def _resolve(req: S3Request, body: bool) -> _Read:
    try:
        return await req.engine.run(_open_for_read, req, body)
    except (S3.NoSuchKey, S3.NoSuchVersion) as exc:
        raise _not_found(req, exc) from exc.__cause__


def _response_headers(req: S3Request, read: _Read) -> tuple[int, dict[str, str]]:
    info = read.info
    full = read.span is None
    checksums = full and req.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED"
    headers = object_headers(info, checksums=checksums)
    headers.update(sse.response_headers(info.record.get("sse"), sse.read_customer_key(req.headers)))
    headers.update(storage_class_headers(req, info.record))
    headers.update(status_headers(req, info.record))
    start, end = read.span if read.span is not None else (0, info.size)
    headers["content-length"] = str(end - start)
    status = 200
    if not full:
        status = 206
        headers["content-range"] = f"bytes {start}-{end - 1}/{info.size}"
    for param, name in RESPONSE_OVERRIDES.items():
        if param in req.query:
            headers[name] = header_value(req.query[param])
    return status, headers


async def get_object(req: S3Request) -> Response:
    read = await _resolve(req, body=True)
    status, headers = _response_headers(req, read)
    if read.data is not None:
        return Response(read.data, status_code=status, headers=headers)
    assert read.chunks is not None
    return EngineStream(req.engine, read.reader, read.chunks, read.first, status, headers, req.request_id)


async def head_object(req: S3Request) -> Response:
    read = await _resolve(req, body=False)
    status, headers = _response_headers(req, read)
    return Response(b"", status_code=status, headers=headers)


#: Bytes of segments one worker-thread call reads for a streamed GET (a hop per segment costs more than the memory).
GET_BATCH_BYTES = 4 << 20


def _next_batch(chunks: Iterator[bytes]) -> list[bytes]:
    """The next segments of ``chunks``, up to about GET_BATCH_BYTES (``[]`` at the end)."""
    out: list[bytes] = []
    size = 0
    while size < GET_BATCH_BYTES:
        chunk = next(chunks, None)
        if chunk is None:
            break
        out.append(chunk)
        size += len(chunk)
    return out


class EngineStream(Response):
    """Sends ``first`` then the rest of ``chunks`` (a reader's segments); closes the reader whatever happens.

    A read error mid-body (DataLoss) aborts the response: the connection is
    closed with fewer bytes sent than its Content-Length, so a client never
    sees a complete-looking body.
    """

    def __init__(
        self,
        engine: Engine,
        reader: Any,
        chunks: Iterator[bytes],
        first: bytes,
        status: int,
        headers: dict[str, str],
        request_id: str,
    ) -> None:
        self.engine = engine
        self.reader = reader
        self.chunks = chunks
        self.first = first
        self.request_id = request_id
        self.status_code = status
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            batch = [self.first]
            while batch:
                for chunk in batch:
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                batch = await self.engine.run(_next_batch, self.chunks)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except S3.S3Error as err:
            # Returning without the final body message makes Hypercorn close
            # the connection short of the announced length.
            log.warning("GET %s aborted mid-body (request %s): %s", scope.get("path"), self.request_id, err.message)
        finally:
            with trio.CancelScope(shield=True):
                await self.engine.run(self._close)

    def _close(self) -> None:
        # The iterator first: closing it waits for its prefetches, which read the reader's files.
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()
        self.reader.close()


def write_conditions(req: S3Request) -> tuple[str | None, bool]:
    """(If-Match, whether If-None-Match: * is set) of a write; the engine checks them at commit."""
    if_none_match = req.headers.get("if-none-match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise S3.S3NotImplemented("If-None-Match on writes supports only '*'")
    return req.headers.get("if-match"), if_none_match is not None


def _put_args(req: S3Request) -> dict[str, Any]:
    """Metadata of a new object from the request headers (PutObject, CreateMultipartUpload)."""
    write_conditions(req)
    return {
        "content_type": req.headers.get("content-type") or None,
        "metadata": req.user_metadata(),
        "headers": req.standard_headers(),
        "tags": req.tagging_header(),
        "tier": storage_tier(req),
    }


async def put_object(req: S3Request) -> Response:
    replica = replica_descriptor(req)
    if replica is not None:
        return await put_replica(req, replica)
    args = _put_args(req)
    if_match, if_none_match = write_conditions(req)
    encryption = sse.write_encryption(req.headers)  # refused before the body is read
    lock = lock_headers_of(req)
    md5 = req.content_md5()
    body, payload, length = req.stream_body()
    headers: dict[str, str] = args["headers"]

    def verify() -> None:
        body.finish()
        # The engine builds the record after verify(): checksums land in its headers.
        headers.update(payload.checksums)

    def put() -> ObjectInfo:
        return req.store.put_object(
            req.bucket,
            req.key,
            body,
            length=length,
            content_md5=md5,
            if_match=if_match,
            if_none_match=if_none_match,
            principal=req.principal,
            verify=verify,
            acl=canned_acl(req),
            encryption=encryption,
            **args,
            **lock.engine_args(),
        )

    if lock.present:
        # Checked before the body is read, so a refused upload stores nothing.
        await req.engine.run(require_object_lock, req.store, req.bucket)
    info = await req.engine.run_upload(put, prefetch=lambda: req.prefetch_body(body))
    out = {"etag": quote_etag(info.etag), **payload.checksums}
    out.update(sse.response_headers(info.record.get("sse"), encryption.customer_key if encryption else None))
    if info.version_id != "null":
        out["x-amz-version-id"] = info.version_id
    return empty_response(200, out)


async def delete_object(req: S3Request) -> Response:
    version = req.version_id()
    bypass = req.bypass_governance()
    if_match = req.headers.get("if-match")
    try:
        result = await req.engine.run(
            lambda: req.store.delete_object(
                req.bucket, req.key, version, principal=req.principal, bypass_governance=bypass, if_match=if_match
            )
        )
    except S3.NoSuchKey as exc:
        if if_match is not None:
            raise _not_found(req, exc) from exc.__cause__  # a condition on nothing is not met: 404
        return empty_response(204)  # S3 deletes are idempotent
    except S3.NoSuchVersion:
        # Deleting a version that is not (or no longer) there succeeds in S3 as well.
        return empty_response(204, {"x-amz-version-id": version} if version else None)
    headers = {}
    if result.get("delete_marker"):
        headers["x-amz-delete-marker"] = "true"
    if result.get("version_id"):
        headers["x-amz-version-id"] = result["version_id"]
    return empty_response(204, headers)


def _delete_many(req: S3Request, keys: list[tuple[str, str | None, str | None]], bypass: bool) -> list[tuple[str, Any]]:
    """In a worker thread: delete each key (or version); one failure does not stop the others.

    An object's ``<ETag>`` makes its delete conditional, like If-Match on DeleteObject.
    """
    out: list[tuple[str, Any]] = []
    store: Store = req.store
    for key, version, etag in keys:
        try:
            result = store.delete_object(
                req.bucket, key, version, principal=req.principal, bypass_governance=bypass, if_match=etag
            )
        except (E.NoSuchKey, E.NoSuchVersion) as exc:
            if etag is not None:
                err = s3_error_for(exc)
                out.append(("Error", {"Key": key, "VersionId": version, "Code": err.code, "Message": err.message}))
                continue
            result = {"version_id": None, "delete_marker": False}
        except E.StoreError as exc:
            err = s3_error_for(exc)
            out.append(("Error", {"Key": key, "VersionId": version, "Code": err.code, "Message": err.message}))
            continue
        entry: dict[str, Any] = {"Key": key, "VersionId": version}
        if result.get("delete_marker"):
            entry["DeleteMarker"] = True
            entry["DeleteMarkerVersionId"] = result.get("version_id")
        out.append(("Deleted", entry))
    return out


async def delete_objects(req: S3Request) -> Response:
    keys, quiet = parse_delete_objects(await req.small_body())
    results = await req.engine.run(_delete_many, req, keys, req.bypass_governance())
    if quiet:
        results = [(tag, value) for tag, value in results if tag == "Error"]
    return xml_response(build("DeleteResult", results))


def _directive(req: S3Request, name: str) -> str:
    value = req.headers.get(name, "COPY").upper()
    if value not in ("COPY", "REPLACE"):
        raise S3.InvalidArgument(f"Unknown {name}", ArgumentName=name, ArgumentValue=value)
    return value


def copy_source(req: S3Request) -> tuple[str, str, str | None]:
    """The copy source (the engine checked that the key may read its bucket: auth.authorize)."""
    return decode_copy_source(req.headers["x-amz-copy-source"])


async def copy_object(req: S3Request) -> Response:
    src_bucket, src_key, src_version = copy_source(req)
    replace = _directive(req, "x-amz-metadata-directive") == "REPLACE"
    replace_tags = _directive(req, "x-amz-tagging-directive") == "REPLACE"
    args = _put_args(req) if replace else {}
    tags = (req.tagging_header() or {}) if replace_tags else None
    lock = lock_headers_of(req)
    encryption = sse.write_encryption(req.headers)
    source_key = sse.copy_source_customer_key(req.headers)
    if (
        (src_bucket, src_key) == (req.bucket, req.key)
        and not replace
        and not replace_tags
        and src_version is None
        and encryption is None
    ):
        raise S3.InvalidRequest(
            "This copy request is illegal because it is trying to copy an object to itself without changing the "
            "object's metadata, storage class, website redirect location or encryption attributes."
        )
    h = req.headers
    store: Store = req.store

    def copy() -> tuple[ObjectInfo, ObjectInfo]:
        src = store.head_object(src_bucket, src_key, src_version)
        if src.delete_marker:
            raise S3.InvalidRequest("The source of a copy request may not specifically refer to a delete marker by version id.")
        sse.refuse_needless_key(src.record, source_key)
        if lock.present:
            require_object_lock(store, req.bucket)
        headers = args.get("headers")
        if replace:
            # The bytes do not change, so their checksum still holds.
            headers = {**{k: v for k, v in src.headers.items() if k.startswith(CHECKSUM_PREFIX)}, **(headers or {})}
        info = store.copy_object(
            src_bucket,
            src_key,
            req.bucket,
            req.key,
            # Pinned to the version just looked at, so the copy and the
            # x-amz-copy-source-version-id reported agree even if the source
            # is overwritten meanwhile.
            version_id=src.version_id,
            replace_metadata=replace,
            tier=storage_tier(req),
            content_type=args.get("content_type"),
            metadata=args.get("metadata"),
            headers=headers,
            tags=tags,
            if_match=h.get("x-amz-copy-source-if-match"),
            if_none_match=h.get("x-amz-copy-source-if-none-match"),
            if_modified_since=req.http_date_header("x-amz-copy-source-if-modified-since"),
            if_unmodified_since=req.http_date_header("x-amz-copy-source-if-unmodified-since"),
            principal=req.principal,
            acl=canned_acl(req),
            source_customer_key=source_key,
            encryption=encryption,
            **lock.engine_args(),
        )
        return src, info

    src, info = await req.engine.run_upload(copy)
    body = build("CopyObjectResult", {"LastModified": iso8601(info.modified), "ETag": quote_etag(info.etag)})
    headers = sse.response_headers(info.record.get("sse"), encryption.customer_key if encryption else None)
    if src.version_id != "null":
        headers["x-amz-copy-source-version-id"] = src.version_id
    if info.version_id != "null":
        headers["x-amz-version-id"] = info.version_id
    return xml_response(body, headers=headers)
