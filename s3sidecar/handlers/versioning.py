"""Bucket versioning as S3 defines it: Get/PutBucketVersioning and ListObjectVersions.

Reads and deletes of one version (``?versionId=``) are handled with the
object resource (:mod:`.objects`); this module owns the bucket's versioning
state and the listing of every version. Guarantees:

* A bucket created with object lock stays versioned: suspending it is
  ``InvalidBucketState``, as in S3 (the engine refuses it too).
* ListObjectVersions returns versions and delete markers of each key newest
  first, keys in order, with ``IsLatest`` on each key's current entry and
  ``VersionId`` ``null`` for versions written while versioning was off or
  suspended. Paging with ``NextKeyMarker``/``NextVersionIdMarker`` never
  repeats nor skips an entry or a common prefix.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from objfs.store import ObjectInfo, Store

from .. import errors as S3
from ..context import S3Request, empty_response, quote_etag, url_encode, xml_response
from ..xmlio import build, iso8601, parse_versioning
from .buckets import encoding_of, max_keys_of
from .service import owner_of, record_owner


async def get_versioning(req: S3Request) -> Response:
    settings = await req.engine.run(req.store.head_bucket, req.bucket)
    # A bucket that never had versioning answers an empty configuration (no Status), as S3 does.
    return xml_response(build("VersioningConfiguration", {"Status": settings.get("versioning")}))


async def put_versioning(req: S3Request) -> Response:
    status = parse_versioning(await req.small_body())
    store: Store = req.store

    def apply() -> None:
        settings = store.head_bucket(req.bucket)
        if status is None:
            return  # no Status: nothing to change
        if settings.get("object_lock") and status != "Enabled":
            raise S3.InvalidBucketState(
                "An Object Lock configuration is present on this bucket, so the versioning state cannot be changed."
            )
        store.update_bucket(req.bucket, versioning=status, principal=req.principal)

    await req.engine.run(apply)
    return empty_response(200)


def _entry(req: S3Request, info: ObjectInfo, latest: bool, encoding: str | None) -> tuple[str, dict[str, Any]]:
    if info.delete_marker:
        return (
            "DeleteMarker",
            {
                "Key": url_encode(info.key, encoding),
                "VersionId": info.version_id,
                "IsLatest": latest,
                "LastModified": iso8601(info.modified),
                "Owner": owner_of(req, record_owner(info.record)),
            },
        )
    return (
        "Version",
        {
            "Key": url_encode(info.key, encoding),
            "VersionId": info.version_id,
            "IsLatest": latest,
            "LastModified": iso8601(info.modified),
            "ETag": quote_etag(info.etag),
            "Size": info.size,
            "StorageClass": req.store.storage_class_of(info.record),
            "Owner": owner_of(req, record_owner(info.record)),
        },
    )


async def list_versions(req: S3Request) -> Response:
    prefix = req.query.get("prefix", "")
    delimiter = req.query.get("delimiter", "")
    encoding = encoding_of(req)
    max_keys = max_keys_of(req)
    key_marker = req.query.get("key-marker", "")
    version_marker = req.query.get("version-id-marker", "")
    if version_marker and not key_marker:
        raise S3.InvalidArgument(
            "A version-id marker cannot be specified without a key marker.",
            ArgumentName="version-id-marker",
            ArgumentValue=version_marker,
        )
    listing = await req.engine.run(
        lambda: req.store.list_object_versions(
            req.bucket,
            prefix=prefix,
            delimiter=delimiter,
            key_marker=key_marker,
            version_id_marker=version_marker,
            max_keys=max_keys,
        )
    )
    next_key, next_version = listing.next_key_marker, listing.next_version_id_marker
    prefixes = listing.common_prefixes
    if listing.truncated and prefixes and (not listing.versions or prefixes[-1] > listing.versions[-1].key):
        # The page ended on a common prefix (entries and prefixes come in key
        # order, so the greater one was added last): continue after the whole
        # prefix, not after the last version, or the prefix would come again.
        next_key, next_version = prefixes[-1], None
    fields: list[tuple[str, Any]] = [
        ("Name", req.bucket),
        ("Prefix", url_encode(prefix, encoding)),
        ("KeyMarker", url_encode(key_marker, encoding)),
        ("VersionIdMarker", version_marker),
        ("NextKeyMarker", url_encode(next_key, encoding) if listing.truncated and next_key else None),
        ("NextVersionIdMarker", next_version if listing.truncated else None),
        ("MaxKeys", max_keys),
        ("Delimiter", url_encode(delimiter, encoding) if delimiter else None),
        ("EncodingType", encoding),
        ("IsTruncated", listing.truncated),
    ]
    # Interleaved in listing order (build keeps the order of the pairs).
    fields += [_entry(req, info, info.object_id in listing.latest, encoding) for info in listing.versions]
    fields += [("CommonPrefixes", {"Prefix": url_encode(p, encoding)}) for p in prefixes]
    return xml_response(build("ListVersionsResult", fields))
