"""The bucket resource: Create/Delete/HeadBucket, GetBucketLocation, ListObjects V1 and V2."""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.responses import Response

from objfs.store import DEFAULT_ACCOUNT

from .. import errors as S3
from ..context import S3Request, empty_response, quote_etag, url_encode, xml_response
from ..xmlio import S3_NS, build, iso8601, parse_create_bucket
from .access import canned_acl
from .service import decode_token, encode_token, owner_of, record_owner

MAX_KEYS = 1000


async def create_bucket(req: S3Request) -> Response:
    location = parse_create_bucket(await req.small_body())
    if location not in (None, req.settings.region):
        raise S3.IllegalLocationConstraintException(
            f"The {location} location constraint is incompatible for the region specific endpoint this request was sent to."
        )
    lock = req.headers.get("x-amz-bucket-object-lock-enabled", "").lower() == "true"
    acl = canned_acl(req)

    def create() -> None:
        req.store.create_bucket(req.bucket, object_lock=lock, owner=req.access.name, principal=req.principal)
        if acl not in (None, "private"):
            req.store.put_bucket_acl(req.bucket, acl, principal=req.principal)

    try:
        await req.engine.run(create)
    except S3.BucketAlreadyOwnedByYou:
        settings = await req.engine.run(req.store.head_bucket, req.bucket)
        if (settings.get("owner_account") or DEFAULT_ACCOUNT) != req.access.account:
            raise S3.BucketAlreadyExists() from None
        raise
    return empty_response(200, {"location": f"/{req.bucket}"})


async def delete_bucket(req: S3Request) -> Response:
    await req.engine.run(lambda: req.store.delete_bucket(req.bucket, principal=req.principal))
    return empty_response(204)


async def head_bucket(req: S3Request) -> Response:
    await req.engine.run(req.store.head_bucket, req.bucket)
    # x-objfs-appliance: a replicating appliance learns it may send replica writes here.
    return empty_response(200, {"x-amz-bucket-region": req.settings.region, "x-objfs-appliance": "1"})


async def get_location(req: S3Request) -> Response:
    await req.engine.run(req.store.head_bucket, req.bucket)
    # S3 reports us-east-1 as an empty constraint.
    location = "" if req.settings.region == "us-east-1" else escape(req.settings.region)
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="{S3_NS}">{location}</LocationConstraint>'
    return xml_response(body.encode())


def max_keys_of(req: S3Request, name: str = "max-keys") -> int:
    """The ``max-keys`` parameter, capped at 1000 as S3 caps it; InvalidArgument if not a number."""
    text = req.query.get(name)
    if text is None:
        return MAX_KEYS
    if not text.isdigit():
        raise S3.InvalidArgument(
            "Provided max-keys not an integer or within integer range", ArgumentName=name, ArgumentValue=text
        )
    return min(int(text), MAX_KEYS)


def encoding_of(req: S3Request) -> str | None:
    """The ``encoding-type`` parameter: None or ``"url"``; InvalidArgument otherwise."""
    encoding = req.query.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3.InvalidArgument("Invalid Encoding Method specified in Request", ArgumentName="encoding-type")
    return encoding


def _contents(req: S3Request, listing: Any, encoding: str | None, owner: bool) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for info in listing.objects:
        entry: dict[str, Any] = {
            "Key": url_encode(info.key, encoding),
            "LastModified": iso8601(info.modified),
            "ETag": quote_etag(info.etag),
            "Size": info.size,
            "StorageClass": req.store.storage_class_of(info.record),
        }
        if owner:
            entry["Owner"] = owner_of(req, record_owner(info.record))
        items.append(("Contents", entry))
    for prefix in listing.common_prefixes:
        items.append(("CommonPrefixes", {"Prefix": url_encode(prefix, encoding)}))
    return items


async def list_objects_v2(req: S3Request) -> Response:
    prefix = req.query.get("prefix", "")
    delimiter = req.query.get("delimiter", "")
    encoding = encoding_of(req)
    max_keys = max_keys_of(req)
    token = req.query.get("continuation-token")
    start_after = req.query.get("start-after", "")
    marker = max(start_after, decode_token(token)) if token is not None else start_after
    listing = await req.engine.run(req.store.list_objects, req.bucket, prefix, delimiter, marker, max_keys)
    fields: list[tuple[str, Any]] = [
        ("Name", req.bucket),
        ("Prefix", url_encode(prefix, encoding)),
        ("Delimiter", url_encode(delimiter, encoding) if delimiter else None),
        ("MaxKeys", max_keys),
        ("EncodingType", encoding),
        ("KeyCount", len(listing.objects) + len(listing.common_prefixes)),
        ("IsTruncated", listing.truncated and max_keys > 0),
        ("ContinuationToken", token),
        (
            "NextContinuationToken",
            encode_token(listing.next_marker) if listing.truncated and listing.next_marker and max_keys > 0 else None,
        ),
        ("StartAfter", url_encode(start_after, encoding) if start_after else None),
    ]
    fields += _contents(req, listing, encoding, owner=req.query.get("fetch-owner") == "true")
    return xml_response(build("ListBucketResult", fields))


async def list_objects_v1(req: S3Request) -> Response:
    prefix = req.query.get("prefix", "")
    delimiter = req.query.get("delimiter", "")
    encoding = encoding_of(req)
    max_keys = max_keys_of(req)
    marker = req.query.get("marker", "")
    listing = await req.engine.run(req.store.list_objects, req.bucket, prefix, delimiter, marker, max_keys)
    fields: list[tuple[str, Any]] = [
        ("Name", req.bucket),
        # S3 encodes the keys, markers and delimiter of a v1 listing, not the Prefix echoed back.
        ("Prefix", prefix),
        ("Marker", url_encode(marker, encoding)),
        (
            "NextMarker",
            url_encode(listing.next_marker, encoding) if listing.truncated and listing.next_marker and max_keys > 0 else None,
        ),
        ("MaxKeys", max_keys),
        ("Delimiter", url_encode(delimiter, encoding) if delimiter else None),
        # Nothing was asked for, so nothing was left out (S3 says false for max-keys=0).
        ("IsTruncated", listing.truncated and max_keys > 0),
        ("EncodingType", encoding),
    ]
    fields += _contents(req, listing, encoding, owner=True)
    return xml_response(build("ListBucketResult", fields))
