"""The object tagging subresource: Get/Put/DeleteObjectTagging, and ``x-amz-tagging`` headers."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from starlette.responses import Response

from .. import errors as S3
from ..context import S3Request, empty_response, xml_response
from ..xmlio import build, parse_tagging

MAX_TAGS = 10
_TAG_CHARS = re.compile(r"[\w\s+\-=.:/@]*")


def parse_query_tags(text: str) -> dict[str, str]:
    """``x-amz-tagging: k1=v1&k2=v2`` (URL-encoded) -> dict; duplicate keys are InvalidTag."""
    tags: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key in tags:
            raise S3.InvalidTag("Cannot provide multiple Tags with the same key")
        tags[key] = value
    return tags


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    """The same rules S3 (and :func:`s3sidecar.xmlio.parse_tagging`) applies to a TagSet."""
    if len(tags) > MAX_TAGS:
        raise S3.InvalidTag("Object tags cannot be greater than 10")
    for key, value in tags.items():
        if not 1 <= len(key) <= 128 or not _TAG_CHARS.fullmatch(key) or key.lower().startswith("aws:"):
            raise S3.InvalidTag("The TagKey you have provided is invalid")
        if len(value) > 256 or not _TAG_CHARS.fullmatch(value):
            raise S3.InvalidTag("The TagValue you have provided is invalid")
    return tags


async def get_tagging(req: S3Request) -> Response:
    version = req.version_id()
    info = await req.engine.run(req.store.head_object, req.bucket, req.key, version)
    tag_set = [("Tag", {"Key": k, "Value": v}) for k, v in info.tags.items()]
    headers = {"x-amz-version-id": info.version_id} if info.version_id != "null" else {}
    return xml_response(build("Tagging", [("TagSet", tag_set or "")]), headers=headers)


async def put_tagging(req: S3Request) -> Response:
    tags = parse_tagging(await req.small_body())
    version = req.version_id()
    info = await req.engine.run(
        lambda: req.store.update_object(req.bucket, req.key, version_id=version, tags=tags, principal=req.principal)
    )
    headers = {"x-amz-version-id": info.version_id} if info.version_id != "null" else {}
    return empty_response(200, headers)


async def delete_tagging(req: S3Request) -> Response:
    version = req.version_id()
    info = await req.engine.run(
        lambda: req.store.update_object(req.bucket, req.key, version_id=version, tags={}, principal=req.principal)
    )
    headers = {"x-amz-version-id": info.version_id} if info.version_id != "null" else {}
    return empty_response(204, headers)
