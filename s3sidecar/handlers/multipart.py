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
from objfs.store import errors as E

from .. import checksums, sse
from .. import errors as S3
from ..conditional import check_read_conditions, parse_copy_range
from ..context import S3Request, empty_response, quote_etag, url_encode, xml_response
from ..xmlio import CHECKSUM_ELEMENTS, build, iso8601, parse_complete_multipart, parse_part_checksums
from .access import canned_acl
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


CHECKSUM_TYPES = ("COMPOSITE", "FULL_OBJECT")
_NOT_A_CHECKSUM = ("x-amz-checksum-type", "x-amz-checksum-algorithm", "x-amz-checksum-mode")


def _checksum_type(text: str | None) -> str | None:
    if text is None:
        return None
    if text.upper() not in CHECKSUM_TYPES:
        raise S3.InvalidRequest(f"Value for x-amz-checksum-type header is invalid: {text!r}")
    return text.upper()


def _default_type(algorithm: str) -> str:
    # CRC64NVME has only a full-object form in S3; the others are composite unless asked.
    return "FULL_OBJECT" if algorithm == "crc64nvme" else "COMPOSITE"


def _check_type(algorithm: str, kind: str) -> None:
    if kind == "FULL_OBJECT" and algorithm not in checksums.FULL_OBJECT_ALGORITHMS:
        raise S3.InvalidRequest(f"The FULL_OBJECT checksum type cannot be used with the {algorithm} checksum algorithm.")
    if kind == "COMPOSITE" and algorithm == "crc64nvme":
        raise S3.InvalidRequest("The COMPOSITE checksum type cannot be used with the crc64nvme checksum algorithm.")


def _upload_checksum_headers(req: S3Request) -> dict[str, str]:
    """The checksum an upload declares at creation (algorithm and type), kept with the upload."""
    algorithm = req.headers.get("x-amz-checksum-algorithm")
    kind = _checksum_type(req.headers.get("x-amz-checksum-type"))
    if algorithm is None:
        if kind is not None:
            raise S3.InvalidRequest("x-amz-checksum-type needs x-amz-checksum-algorithm")
        return {}
    algorithm = checksums.normalize_algorithm(algorithm)
    kind = kind or _default_type(algorithm)
    _check_type(algorithm, kind)
    return {"x-amz-checksum-algorithm": algorithm, "x-amz-checksum-type": kind}


def object_checksum(
    req: S3Request, from_xml: dict[int, dict[str, str]], upload: dict[str, Any], parts: list[dict[str, Any]]
) -> dict[str, str]:
    """In the engine, at completion: the whole object's checksum headers, verified against what the client sent.

    The algorithm is the upload's (from CreateMultipartUpload) or the one the
    Complete request's ``x-amz-checksum-*`` header names; the type COMPOSITE
    (checksum of the parts' checksums, ``-N``) or FULL_OBJECT (the CRCs
    combined: the checksum of the whole body). Per-part checksums in the XML
    must equal the parts' own (InvalidPart otherwise).
    """
    for part in parts:
        for name, value in from_xml.get(part["number"], {}).items():
            if part["checksums"].get(name) != value:
                raise S3.InvalidPart(f"The {name[15:]} checksum of part {part['number']} does not match the uploaded part")
    size = req.headers.get("x-amz-mp-object-size")
    if size is not None and size.strip() != str(sum(p["size"] for p in parts)):
        raise S3.InvalidRequest("The provided x-amz-mp-object-size does not match the size of the parts")
    declared = upload["headers"]
    given = {n: v for n, v in req.headers.items() if n.startswith("x-amz-checksum-") and n not in _NOT_A_CHECKSUM}
    if len(given) > 1:
        raise S3.InvalidRequest("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
    algorithm = declared.get("x-amz-checksum-algorithm")
    if given:
        named = checksums.normalize_algorithm(next(iter(given)))
        if algorithm is not None and named != algorithm:
            raise S3.InvalidRequest(f"The upload was created for {algorithm} checksums, not {named}")
        algorithm = named
    if algorithm is None:
        return {}
    kind = _checksum_type(req.headers.get("x-amz-checksum-type"))
    if kind is not None and declared.get("x-amz-checksum-type") not in (None, kind):
        raise S3.InvalidRequest(f"The upload was created for {declared['x-amz-checksum-type']} checksums, not {kind}")
    kind = kind or declared.get("x-amz-checksum-type") or _default_type(algorithm)
    _check_type(algorithm, kind)
    header = "x-amz-checksum-" + algorithm
    missing = [p["number"] for p in parts if header not in p["checksums"]]
    if missing:
        raise S3.InvalidRequest(f"Part {missing[0]} was uploaded without a {algorithm} checksum")
    if kind == "COMPOSITE":
        value = checksums.composite(algorithm, [p["checksums"][header] for p in parts])
    else:
        value = checksums.full_object(algorithm, [(p["checksums"][header], p["size"]) for p in parts])
    if given:
        expected = next(iter(given.values())).strip()
        # A composite value may be sent with or without its -N suffix.
        if expected != value and not (kind == "COMPOSITE" and expected == value.rsplit("-", 1)[0]):
            raise S3.BadDigest(f"The {algorithm.upper()} you specified did not match the calculated checksum.")
    return {header: value, "x-amz-checksum-type": kind}


def checksum_fields(headers: dict[str, str]) -> list[tuple[str, Any]]:
    """``ChecksumX`` / ``ChecksumType`` elements for an object's stored checksum headers."""
    fields: list[tuple[str, Any]] = []
    for element, algorithm in CHECKSUM_ELEMENTS.items():
        value = headers.get("x-amz-checksum-" + algorithm)
        if value is not None:
            fields.append((element, value))
    if fields:
        fields.append(("ChecksumType", headers.get("x-amz-checksum-type", "FULL_OBJECT")))
    return fields


async def create(req: S3Request) -> Response:
    args = _put_args(req)
    args["headers"].update(_upload_checksum_headers(req))
    lock = lock_headers_of(req)
    store: Store = req.store

    encryption = sse.write_encryption(req.headers)

    def start() -> tuple[str, Any]:
        if lock.present:
            # Refused now rather than at completion, after every part was sent.
            require_object_lock(store, req.bucket)
        upload_id = store.create_multipart(
            req.bucket,
            req.key,
            encryption=encryption,
            **args,
            **lock.engine_args(),
            acl=canned_acl(req),
            principal=req.principal,
        )
        return upload_id, store.get_upload(upload_id).get("sse")

    upload_id, upload_sse = await req.engine.run(start)
    body = build("InitiateMultipartUploadResult", {"Bucket": req.bucket, "Key": req.key, "UploadId": upload_id})
    headers = sse.response_headers(upload_sse, encryption.customer_key if encryption else None)
    declared = _upload_checksum_headers(req)
    if declared:
        headers["x-amz-checksum-algorithm"] = declared["x-amz-checksum-algorithm"].upper()
        headers["x-amz-checksum-type"] = declared["x-amz-checksum-type"]
    return xml_response(body, headers=headers)


async def upload_part(req: S3Request) -> Response:
    upload_id = _upload_id(req)
    number = _part_number(req)
    md5 = req.content_md5()
    body, payload, length = req.stream_body()
    customer_key = sse.read_customer_key(req.headers)

    def put() -> tuple[dict[str, Any], Any]:
        upload = _check_upload(req, upload_id)
        sse.refuse_needless_key(upload, customer_key)
        # payload.checksums is filled in by body.finish, which the engine calls before reading it.
        part = req.store.upload_part(
            upload_id,
            number,
            body,
            length=length,
            content_md5=md5,
            verify=body.finish,
            checksums=payload.checksums,
            customer_key=customer_key,
        )
        return part, upload.get("sse")

    part, upload_sse = await req.engine.run_upload(put, prefetch=lambda: req.prefetch_body(body))
    return empty_response(
        200, {"etag": quote_etag(part["etag"]), **payload.checksums, **sse.response_headers(upload_sse, customer_key)}
    )


async def upload_part_copy(req: S3Request) -> Response:
    upload_id = _upload_id(req)
    number = _part_number(req)
    src_bucket, src_key, src_version = copy_source(req)
    h = req.headers
    store: Store = req.store
    customer_key = sse.read_customer_key(h)
    source_key = sse.copy_source_customer_key(h)
    upload_sse = None

    def copy() -> dict[str, Any]:
        nonlocal upload_sse
        upload = _check_upload(req, upload_id)
        sse.refuse_needless_key(upload, customer_key)
        upload_sse = upload.get("sse")
        info = store.head_object(src_bucket, src_key, src_version)
        if info.delete_marker:
            raise S3.InvalidRequest("The source of a copy request may not specifically refer to a delete marker by version id.")
        sse.refuse_needless_key(info.record, source_key)
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
            customer_key=customer_key,
            source_customer_key=source_key,
        )

    part = await req.engine.run_upload(copy)
    body = build("CopyPartResult", {"LastModified": iso8601(time.time()), "ETag": quote_etag(part["etag"])})
    headers = {"x-amz-copy-source-version-id": src_version} if src_version else {}
    headers.update(sse.response_headers(upload_sse, customer_key))
    return xml_response(body, headers=headers)


async def complete(req: S3Request) -> Response:
    upload_id = _upload_id(req)
    document = await req.small_body(object_checksums=True)
    parts = parse_complete_multipart(document)
    from_xml = parse_part_checksums(document)
    store: Store = req.store
    if_match, if_none_match = write_conditions(req)
    customer_key = sse.read_customer_key(req.headers)

    def finish() -> Any:
        # A recently completed upload still names its destination: a retried Complete succeeds again.
        if store.upload_destination(upload_id) != (req.bucket, req.key):
            raise S3.NoSuchUpload(UploadId=upload_id)
        try:
            sse.refuse_needless_key(store.get_upload(upload_id), customer_key)
        except E.NoSuchUpload:
            pass  # completed already: the engine answers with what it made
        return store.complete_multipart(
            upload_id,
            parts,
            if_match=if_match,
            if_none_match=if_none_match,
            checksum_headers=lambda upload, chosen: object_checksum(req, from_xml, upload, chosen),
            principal=req.principal,
            customer_key=customer_key,
        )

    info = await req.engine.run_upload(finish)
    host = req.headers.get("host", "")
    body = build(
        "CompleteMultipartUploadResult",
        {
            "Location": f"{req.request.url.scheme}://{host}/{req.bucket}/{req.key}",
            "Bucket": req.bucket,
            "Key": req.key,
            "ETag": quote_etag(info.etag),
            **dict(checksum_fields(info.headers)),
        },
    )
    headers = {"x-amz-version-id": info.version_id} if info.version_id != "null" else {}
    headers.update(sse.response_headers(info.record.get("sse"), customer_key))
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
                    **dict(checksum_fields(part["checksums"])[:-1]),
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
