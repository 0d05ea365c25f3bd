"""Who may reach a bucket besides its owner: canned ACLs, the bucket policy, the public access block.

The S3 layer only translates: the engine stores and applies them
(``Store.put_bucket_acl`` / ``put_bucket_policy`` / ``put_public_access_block``,
decisions in :mod:`objfs.store.policy`). ACLs are canned (``x-amz-acl``);
an ``AccessControlPolicy`` document with arbitrary grants is NotImplemented.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from objfs.store import DEFAULT_ACCOUNT, policy_is_public

from .. import errors as S3
from ..context import S3Request, empty_response, xml_response
from ..xmlio import build, find_text, parse_xml
from .service import owner_of, record_owner

_EVERYONE = "http://acs.amazonaws.com/groups/global/AllUsers"
_AUTHENTICATED = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


def canned_acl(req: S3Request) -> str | None:
    """The ``x-amz-acl`` header; grants by header (x-amz-grant-*) are not supported."""
    if any(name.startswith("x-amz-grant-") for name in req.headers):
        raise S3.S3NotImplemented("Grants by x-amz-grant-* headers are not implemented by objfs; use x-amz-acl")
    return req.headers.get("x-amz-acl")


def _acl_document(req: S3Request, owner: str, acl: str | None, *, bucket_owner: str | None = None) -> bytes:
    owner_element = owner_of(req, owner)
    grants: list[tuple[str, Any]] = [
        ("Grant", [("Grantee", {"ID": owner_element["ID"], "DisplayName": owner}), ("Permission", "FULL_CONTROL")])
    ]
    if acl in ("public-read", "authenticated-read"):
        uri = _EVERYONE if acl == "public-read" else _AUTHENTICATED
        grants.append(("Grant", [("Grantee", {"URI": uri}), ("Permission", "READ")]))
    if acl in ("bucket-owner-read", "bucket-owner-full-control") and bucket_owner and bucket_owner != owner:
        other = owner_of(req, bucket_owner)
        permission = "READ" if acl == "bucket-owner-read" else "FULL_CONTROL"
        grants.append(("Grant", [("Grantee", {"ID": other["ID"], "DisplayName": bucket_owner}), ("Permission", permission)]))
    body = build("AccessControlPolicy", [("Owner", owner_element), ("AccessControlList", grants)])
    # The xsi:type of each Grantee, as S3 writes it (SDKs read Type from it).
    for kind, marker in (("CanonicalUser", b"<Grantee><ID>"), ("Group", b"<Grantee><URI>")):
        body = body.replace(
            marker,
            b'<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="'
            + kind.encode()
            + b'">'
            + marker[len(b"<Grantee>") :],
        )
    return body


async def _require_canned(req: S3Request) -> str:
    acl = canned_acl(req)
    body = await req.small_body()
    if acl is None:
        if body.strip():
            raise S3.S3NotImplemented("AccessControlPolicy documents are not implemented by objfs; use x-amz-acl")
        raise S3.MissingSecurityHeader("Your request was missing a required header: x-amz-acl")
    return acl


async def get_bucket_acl(req: S3Request) -> Response:
    settings = await req.engine.run(lambda: req.store.head_bucket(req.bucket, principal=req.principal))
    return xml_response(_acl_document(req, settings.get("owner_account") or DEFAULT_ACCOUNT, settings.get("acl")))


async def put_bucket_acl(req: S3Request) -> Response:
    acl = await _require_canned(req)
    await req.engine.run(lambda: req.store.put_bucket_acl(req.bucket, acl, principal=req.principal))
    return empty_response(200)


async def get_object_acl(req: S3Request) -> Response:
    version = req.version_id()

    def look() -> tuple[dict[str, Any], dict[str, Any]]:
        info = req.store.head_object(req.bucket, req.key, version, principal=req.principal)
        return info.record, req.store.head_bucket(req.bucket)

    record, settings = await req.engine.run(look)
    document = _acl_document(
        req, record_owner(record), record.get("acl"), bucket_owner=settings.get("owner_account") or DEFAULT_ACCOUNT
    )
    headers = {"x-amz-version-id": record["version"]} if record["version"] != "null" else {}
    return xml_response(document, headers=headers)


async def put_object_acl(req: S3Request) -> Response:
    acl = await _require_canned(req)
    version = req.version_id()
    info = await req.engine.run(
        lambda: req.store.update_object(req.bucket, req.key, version_id=version, acl=acl, principal=req.principal)
    )
    return empty_response(200, {"x-amz-version-id": info.version_id} if info.version_id != "null" else None)


async def get_bucket_policy(req: S3Request) -> Response:
    settings = await req.engine.run(lambda: req.store.head_bucket(req.bucket, principal=req.principal))
    if not settings.get("policy"):
        raise S3.NoSuchBucketPolicy(BucketName=req.bucket)
    return Response(settings["policy"]["text"].encode("utf-8"), media_type="application/json")


async def put_bucket_policy(req: S3Request) -> Response:
    text = (await req.small_body()).decode("utf-8", "replace")
    await req.engine.run(lambda: req.store.put_bucket_policy(req.bucket, text, principal=req.principal))
    return empty_response(204)


async def delete_bucket_policy(req: S3Request) -> Response:
    await req.engine.run(lambda: req.store.put_bucket_policy(req.bucket, None, principal=req.principal))
    return empty_response(204)


async def get_policy_status(req: S3Request) -> Response:
    settings = await req.engine.run(lambda: req.store.head_bucket(req.bucket, principal=req.principal))
    public = policy_is_public(settings.get("policy"))
    return xml_response(build("PolicyStatus", {"IsPublic": public}))


async def get_public_access_block(req: S3Request) -> Response:
    settings = await req.engine.run(lambda: req.store.head_bucket(req.bucket, principal=req.principal))
    flags = settings.get("public_access_block")
    if not flags:
        raise S3.NoSuchPublicAccessBlockConfiguration(BucketName=req.bucket)
    return xml_response(build("PublicAccessBlockConfiguration", {name: bool(flags.get(name)) for name in _FLAGS}))


async def put_public_access_block(req: S3Request) -> Response:
    root = parse_xml(await req.small_body())
    if root.tag != "PublicAccessBlockConfiguration":
        raise S3.MalformedXML()
    flags = {}
    for name in _FLAGS:
        text = find_text(root, name, strip=True)
        if text not in (None, "true", "false"):
            raise S3.MalformedXML()
        flags[name] = text == "true"
    await req.engine.run(lambda: req.store.put_public_access_block(req.bucket, flags, principal=req.principal))
    return empty_response(200)


async def delete_public_access_block(req: S3Request) -> Response:
    await req.engine.run(lambda: req.store.put_public_access_block(req.bucket, None, principal=req.principal))
    return empty_response(204)
