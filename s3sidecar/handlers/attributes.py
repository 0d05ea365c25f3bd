"""GetObjectAttributes: what S3 tells of an object without its body (ETag, checksum, parts, storage class, size).

The attributes asked for (``x-amz-object-attributes``) are the only ones
answered; the parts are paged by ``x-amz-max-parts`` and
``x-amz-part-number-marker`` as ListParts pages an upload's.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from objfs.store import ObjectInfo

from .. import errors as S3
from ..context import S3Request, xml_response
from ..xmlio import CHECKSUM_ELEMENTS, build, http_date
from .lock import refuse_delete_marker
from .multipart import checksum_fields

ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")
MAX_PARTS = 1000


def _asked(req: S3Request) -> list[str]:
    asked = [a.strip() for a in req.headers.get("x-amz-object-attributes", "").split(",") if a.strip()]
    if not asked:
        raise S3.InvalidArgument(
            "The x-amz-object-attributes header specifying the attributes to be retrieved is either missing or empty",
            ArgumentName="x-amz-object-attributes",
        )
    unknown = [a for a in asked if a not in ATTRIBUTES]
    if unknown:
        raise S3.InvalidArgument(
            "Invalid attribute name specified", ArgumentName="x-amz-object-attributes", ArgumentValue=unknown[0]
        )
    return asked


def _header_int(req: S3Request, name: str, default: int, cap: int) -> int:
    text = req.headers.get(name)
    if text is None:
        return default
    text = text.strip()
    if not text.isdigit():
        raise S3.InvalidArgument(f"Provided {name} not an integer", ArgumentName=name, ArgumentValue=text)
    return min(int(text), cap)


def _object_parts(req: S3Request, info: ObjectInfo) -> list[tuple[str, Any]] | None:
    parts = info.parts()
    if not parts:
        return None
    marker = _header_int(req, "x-amz-part-number-marker", 0, 10000)
    limit = _header_int(req, "x-amz-max-parts", MAX_PARTS, MAX_PARTS)
    after = [p for p in parts if p["number"] > marker]
    page, truncated = after[:limit], len(after) > limit
    listed: list[tuple[str, Any]] = []
    for part in page:
        entry: list[tuple[str, Any]] = [("PartNumber", part["number"]), ("Size", part["size"])]
        entry += [
            (element, part["checksums"][f"x-amz-checksum-{alg}"])
            for element, alg in CHECKSUM_ELEMENTS.items()
            if f"x-amz-checksum-{alg}" in part["checksums"]
        ]
        listed.append(("Part", entry))
    fields: list[tuple[str, Any]] = [
        ("PartsCount", len(parts)),
        ("PartNumberMarker", marker),
        ("NextPartNumberMarker", page[-1]["number"] if page else marker),
        ("MaxParts", limit),
        ("IsTruncated", truncated),
    ]
    return fields + listed


async def get_object_attributes(req: S3Request) -> Response:
    asked = _asked(req)
    version = req.version_id()
    try:
        info = await req.engine.run(lambda: req.store.head_object(req.bucket, req.key, version, principal=req.principal))
    except S3.NoSuchKey as exc:
        cause = exc.__cause__
        if getattr(cause, "delete_marker", False):
            exc.headers["x-amz-delete-marker"] = "true"
        raise
    if version is not None:
        refuse_delete_marker(info)
    values: dict[str, Any] = {
        "ETag": info.etag,  # unquoted here, as S3 sends it
        "Checksum": checksum_fields(info.headers) or None,
        "ObjectParts": _object_parts(req, info),
        "StorageClass": "STANDARD",
        "ObjectSize": info.size,
    }
    body = build("GetObjectAttributesResponse", [(name, values[name]) for name in ATTRIBUTES if name in asked])
    headers = {"last-modified": http_date(info.modified)}
    if info.version_id != "null":
        headers["x-amz-version-id"] = info.version_id
    return xml_response(body, headers=headers)
