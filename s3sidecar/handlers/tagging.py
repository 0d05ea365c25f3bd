"""The tagging subresource of objects and buckets: Get/Put/Delete(Object|Bucket)Tagging (tag rules: :mod:`s3sidecar.tags`)."""

from __future__ import annotations

from starlette.responses import Response

from .. import errors as S3
from ..context import S3Request, empty_response, xml_response
from ..xmlio import build, parse_tagging


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


async def get_bucket_tagging(req: S3Request) -> Response:
    settings = await req.engine.run(req.store.head_bucket, req.bucket)
    tags = settings.get("tagging") or {}
    if not tags:
        raise S3.NoSuchTagSet(BucketName=req.bucket)
    tag_set = [("Tag", {"Key": k, "Value": v}) for k, v in tags.items()]
    return xml_response(build("Tagging", [("TagSet", tag_set)]))


async def put_bucket_tagging(req: S3Request) -> Response:
    tags = parse_tagging(await req.small_body())
    await req.engine.run(lambda: req.store.update_bucket(req.bucket, tagging=tags, principal=req.principal))
    return empty_response(204)


async def delete_bucket_tagging(req: S3Request) -> Response:
    await req.engine.run(lambda: req.store.update_bucket(req.bucket, tagging={}, principal=req.principal))
    return empty_response(204)
