"""The upload resource: Create/UploadPart/UploadPartCopy/Complete/Abort, ListParts, ListMultipartUploads.

Parts are kept durably by the engine until the upload completes or is
aborted; Complete is one engine transaction (atomic) and yields S3's
``md5-of-md5s-N`` ETag. Every call on an upload id first checks that the
upload belongs to the bucket and key in the URL, so an id cannot be used to
reach a bucket the access key is not allowed to touch.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import Response

from objfs.store import Store

from .. import errors as S3
from ..conditional import check_read_conditions, parse_copy_range
from ..context import S3Request, empty_response, quote_etag, url_encode, xml_response
from ..xmlio import build, iso8601, parse_complete_multipart
from .lock import lock_headers_of, require_object_lock
from .objects import _put_args, copy_source, write_conditions
from .service import owner_of

MAX_PARTS_LISTED = 1000
MAX_UPLOADS_LISTED = 1000


def _upload_id(req: S3Request) -> str:
    upload_id = req.query.get("uploadId", "")
    if not upload_id:
        raise S3.NoSuchUpload(UploadId=upload_id)
    return upload_id


def _check_upload(req: S3Request, upload_id: str) -> dict[str, Any]:
    """In a worker thread: the upload, if it is for this bucket and key."""
    upload = req.store.get_upload(upload_id)
    if upload["bucket"] != req.bucket or upload["key"] != req.key:
        raise S3.NoSuchUpload(UploadId=upload_id)
    return upload


def _part_number(req: S3Request) -> int:
    text = req.query.get("partNumber", "")
    if not text.isdigit() or not 1 <= int(text) <= 10000:
        raise S3.InvalidArgument(
            "Part number must be an integer between 1 and 10000, inclusive", ArgumentName="partNumber", ArgumentValue=text
        )
    return int(text)


async def create(req: S3Request) -> Response:
    args = _put_args(req)
    lock = lock_headers_of(req)
    store: Store = req.store

    def start() -> str:
        if lock.present:
            # Refused now rather than at completion, after every part was sent.
            require_object_lock(store, req.bucket)
        return store.create_multipart(req.bucket, req.key, **args, **lock.engine_args())

    upload_id = await req.engine.run(start)
    body = build("InitiateMultipartUploadResult", {"Bucket": req.bucket, "Key": req.key, "UploadId": upload_id})
    headers = {}
    algorithm = req.headers.get("x-amz-checksum-algorithm")
    if algorithm:
        headers["x-amz-checksum-algorithm"] = algorithm
    return xml_response(body, headers=headers)


async def upload_part(req: S3Request) -> Response:
    upload_id = _upload_id(req)
    number = _part_number(req)
    md5 = req.content_md5()
    body, payload, length = req.stream_body()

    def put() -> dict[str, Any]:
        _check_upload(req, upload_id)
        return req.store.upload_part(upload_id, number, body, length=length, content_md5=md5, verify=body.finish)

    part = await req.engine.run_upload(put)
    return empty_response(200, {"etag": quote_etag(part["etag"]), **payload.checksums})


async def upload_part_copy(req: S3Request) -> Response:
    upload_id = _upload_id(req)
    number = _part_number(req)
    src_bucket, src_key, src_version = copy_source(req)
    h = req.headers
    store: Store = req.store

    def copy() -> dict[str, Any]:
        _check_upload(req, upload_id)
        info = store.head_object(src_bucket, src_key, src_version)
        if info.delete_marker:
            raise S3.InvalidRequest("The source of a copy request may not specifically refer to a delete marker by version id.")
        try:
            check_read_conditions(
                info,
                h.get("x-amz-copy-source-if-match"),
                h.get("x-amz-copy-source-if-none-match"),
                req.http_date_header("x-amz-copy-source-if-modified-since"),
                req.http_date_header("x-amz-copy-source-if-unmodified-since"),
            )
        except S3.NotModified:
            # For copies a failed If-None-Match / If-Modified-Since is a 412, not a 304.
            raise S3.PreconditionFailed() from None
        start, end = parse_copy_range(h.get("x-amz-copy-source-range"), info.size)
        if end - start > req.settings.max_object_size:
            raise S3.EntityTooLarge(MaxSizeAllowed=req.settings.max_object_size)
        # Pinned to the version whose conditions were checked; as the
        # principal, so the engine audits the read of the source.
        return store.upload_part_copy(
            upload_id,
            number,
            src_bucket,
            src_key,
            version_id=info.version_id,
            start=start,
            end=end,
            principal=req.principal,
        )

    part = await req.engine.run_upload(copy)
    body = build("CopyPartResult", {"LastModified": iso8601(time.time()), "ETag": quote_etag(part["etag"])})
    headers = {"x-amz-copy-source-version-id": src_version} if src_version else {}
    return xml_response(body, headers=headers)


async def complete(req: S3Request) -> Response:
    upload_id = _upload_id(req)
    parts = parse_complete_multipart(await req.small_body())
    store: Store = req.store
    if_match, if_none_match = write_conditions(req)

    def finish() -> Any:
        # A recently completed upload still names its destination: a retried Complete succeeds again.
        if store.upload_destination(upload_id) != (req.bucket, req.key):
            raise S3.NoSuchUpload(UploadId=upload_id)
        return store.complete_multipart(upload_id, parts, if_match=if_match, if_none_match=if_none_match, principal=req.principal)

    info = await req.engine.run_upload(finish)
    host = req.headers.get("host", "")
    body = build(
        "CompleteMultipartUploadResult",
        {
            "Location": f"{req.request.url.scheme}://{host}/{req.bucket}/{req.key}",
            "Bucket": req.bucket,
            "Key": req.key,
            "ETag": quote_etag(info.etag),
        },
    )
    headers = {"x-amz-version-id": info.version_id} if info.version_id != "null" else {}
    return xml_response(body, headers=headers)


async def abort(req: S3Request) -> Response:
    upload_id = _upload_id(req)

    def drop() -> None:
        _check_upload(req, upload_id)
        req.store.abort_multipart(upload_id)

    await req.engine.run(drop)
    return empty_response(204)


def _int_param(req: S3Request, name: str, default: int, cap: int) -> int:
    text = req.query.get(name)
    if text is None:
        return default
    if not text.isdigit():
        raise S3.InvalidArgument(f"Provided {name} not an integer or within integer range", ArgumentName=name, ArgumentValue=text)
    return min(int(text), cap)


async def list_parts(req: S3Request) -> Response:
    upload_id = _upload_id(req)
    marker = _int_param(req, "part-number-marker", 0, 10000)
    max_parts = _int_param(req, "max-parts", MAX_PARTS_LISTED, MAX_PARTS_LISTED)

    def listing() -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
        _check_upload(req, upload_id)
        return req.store.list_parts(upload_id, marker, max_parts)

    _upload, parts, truncated = await req.engine.run(listing)
    owner = owner_of(req)
    fields: list[tuple[str, Any]] = [
        ("Bucket", req.bucket),
        ("Key", req.key),
        ("UploadId", upload_id),
        ("PartNumberMarker", marker),
        ("NextPartNumberMarker", parts[-1]["number"] if parts else marker),
        ("MaxParts", max_parts),
        ("IsTruncated", truncated),
        ("Initiator", owner),
        ("Owner", owner),
        ("StorageClass", "STANDARD"),
    ]
    for part in parts:
        fields.append(
            (
                "Part",
                {
                    "PartNumber": part["number"],
                    "LastModified": iso8601(part["created"]),
                    "ETag": quote_etag(part["etag"]),
                    "Size": part["size"],
                },
            )
        )
    return xml_response(build("ListPartsResult", fields))


async def list_uploads(req: S3Request) -> Response:
    prefix = req.query.get("prefix", "")
    delimiter = req.query.get("delimiter", "")
    key_marker = req.query.get("key-marker", "")
    id_marker = req.query.get("upload-id-marker", "")
    max_uploads = _int_param(req, "max-uploads", MAX_UPLOADS_LISTED, MAX_UPLOADS_LISTED)
    encoding = req.query.get("encoding-type")
    uploads = await req.engine.run(req.store.list_uploads, req.bucket, prefix)
    entries: list[tuple[str, Any]] = []
    prefixes: list[str] = []
    truncated = False
    last: dict[str, Any] | None = None
    for upload in uploads:
        key = upload["key"]
        if key_marker and (key < key_marker or (key == key_marker and (not id_marker or upload["id"] <= id_marker))):
            continue
        common = None
        if delimiter:
            pos = key.find(delimiter, len(prefix))
            common = key[: pos + len(delimiter)] if pos >= 0 else None
        if common is not None and common in prefixes:
            continue
        if len(entries) + len(prefixes) >= max_uploads:
            truncated = True
            break
        if common is not None:
            prefixes.append(common)
            continue
        last = upload
        entries.append(
            (
                "Upload",
                {
                    "Key": url_encode(key, encoding),
                    "UploadId": upload["id"],
                    "Initiator": owner_of(req),
                    "Owner": owner_of(req),
                    "StorageClass": "STANDARD",
                    "Initiated": iso8601(upload["created"]),
                },
            )
        )
    fields: list[tuple[str, Any]] = [
        ("Bucket", req.bucket),
        ("KeyMarker", url_encode(key_marker, encoding)),
        ("UploadIdMarker", id_marker),
        ("NextKeyMarker", url_encode(last["key"], encoding) if truncated and last else None),
        ("NextUploadIdMarker", last["id"] if truncated and last else None),
        ("Prefix", url_encode(prefix, encoding)),
        ("Delimiter", delimiter or None),
        ("MaxUploads", max_uploads),
        ("IsTruncated", truncated),
        ("EncodingType", encoding),
    ]
    fields += entries
    fields += [("CommonPrefixes", {"Prefix": url_encode(p, encoding)}) for p in prefixes]
    return xml_response(build("ListMultipartUploadsResult", fields))
