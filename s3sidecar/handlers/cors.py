"""The cors subresource (Put/Get/DeleteBucketCors) and preflight requests (OPTIONS).

Preflights are anonymous, as browsers send them: they read nothing but the
bucket's CORS rules (:mod:`s3sidecar.cors`) and answer from them alone.
"""

from __future__ import annotations

from starlette.responses import Response

from .. import cors
from .. import errors as S3
from ..context import S3Request, empty_response, xml_response


async def put_cors(req: S3Request) -> Response:
    rules = cors.parse_cors(await req.small_body())
    await req.engine.run(lambda: req.store.update_bucket(req.bucket, cors=rules, principal=req.principal))
    return empty_response(200)


async def get_cors(req: S3Request) -> Response:
    settings = await req.engine.run(lambda: req.store.head_bucket(req.bucket, principal=req.principal))
    if not settings.get("cors"):
        raise S3.NoSuchCORSConfiguration(BucketName=req.bucket)
    return xml_response(cors.render_cors(settings["cors"]))


async def delete_cors(req: S3Request) -> Response:
    await req.engine.run(lambda: req.store.update_bucket(req.bucket, cors=[], principal=req.principal))
    return empty_response(204)


async def preflight(req: S3Request) -> Response:
    """An OPTIONS request: allowed by the first matching rule, else 403 (as S3)."""
    origin = req.headers.get("origin")
    method = req.headers.get("access-control-request-method")
    if not origin:
        raise S3.BadRequest("Insufficient information. Origin request header needed.")
    if not method:
        raise S3.BadRequest("Invalid Access-Control-Request-Method: null")
    # No principal: reading the bucket's CORS rules is all a preflight may do.
    settings = await req.engine.run(req.store.head_bucket, req.bucket)
    rules = settings.get("cors") or []
    if not rules:
        raise S3.CORSForbidden("CORSResponse: CORS is not enabled for this bucket.")
    wanted = cors.requested_headers(req.headers.get("access-control-request-headers"))
    rule = cors.matching_rule(rules, origin, method, wanted)
    if rule is None:
        raise S3.CORSForbidden()
    return empty_response(200, cors.response_headers(rule, origin, wanted))
