"""Who may reach a bucket besides its owner: ACLs (canned and grants), the bucket policy, the public access block.

The S3 layer only translates: the engine stores and applies them
(``Store.put_bucket_acl`` / ``put_object_acl`` / ``put_bucket_policy`` /
``put_public_access_block``, decisions in :mod:`objfs.store.policy`). An ACL
comes as ``x-amz-acl`` (canned), as ``x-amz-grant-*`` headers
(``id="<canonical id>"`` or ``uri="<group>"``, comma-separated), or, on
PutBucketAcl / PutObjectAcl, as an ``AccessControlPolicy`` document; a grant
to an e-mail address is UnresolvableGrantByEmailAddress (accounts have none).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import Response

from objfs.store import DEFAULT_ACCOUNT, canonical_id, policy_is_public

from .. import errors as S3
from ..context import S3Request, empty_response, xml_response
from ..xmlio import build, find_all, find_text, parse_xml
from .service import owner_of, record_owner

_EVERYONE = "http://acs.amazonaws.com/groups/global/AllUsers"
_AUTHENTICATED = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
_GROUP_URIS = {"AllUsers": _EVERYONE, "AuthenticatedUsers": _AUTHENTICATED}
_URI_GROUPS = {uri: group for group, uri in _GROUP_URIS.items()}
_PERMISSIONS = ("READ", "WRITE", "READ_ACP", "WRITE_ACP", "FULL_CONTROL")
_GRANT_HEADERS = {f"x-amz-grant-{p.lower().replace('_', '-')}": p for p in _PERMISSIONS}
#: One ``type="value"`` of a grant header (the value may be unquoted), up to its comma.
_GRANTEE_ITEM = re.compile(r'\s*([A-Za-z]+)\s*=\s*(?:"([^"]*)"|([^,\s]*))\s*(?:,|$)')
_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


def _grantee(kind: str, value: str) -> str:
    """The engine's name of a grantee: a canonical id (checked by the engine) or a group."""
    kind = kind.lower()
    if kind == "id":
        return value.strip().lower()
    if kind == "uri":
        if value.strip() not in _URI_GROUPS:
            raise S3.InvalidArgument(f"Invalid group uri {value!r}")
        return _URI_GROUPS[value.strip()]
    if kind in ("emailaddress", "amazoncustomerbyemail"):
        raise S3.UnresolvableGrantByEmailAddress()
    raise S3.InvalidArgument(f"Invalid grantee type {kind!r}: id or uri")


def _header_grants(req: S3Request) -> list[dict[str, str]] | None:
    """The grants of the ``x-amz-grant-*`` headers, None when there is none."""
    grants: list[dict[str, str]] | None = None
    for name in req.headers:
        if name.startswith("x-amz-grant-") and name not in _GRANT_HEADERS:
            raise S3.InvalidArgument(f"unknown grant header {name}")
    for header, permission in _GRANT_HEADERS.items():
        value = req.headers.get(header)
        if value is None:
            continue
        grants = grants if grants is not None else []
        position = 0
        while position < len(value):
            match = _GRANTEE_ITEM.match(value, position)
            if match is None or match.end() == position:
                raise S3.InvalidArgument(f'{header} must list grantees as id="..." or uri="..."')
            text = match.group(2) if match.group(2) is not None else match.group(3)
            grants.append({"grantee": _grantee(match.group(1), text), "permission": permission})
            position = match.end()
    return grants


def request_acl(req: S3Request) -> str | list[dict[str, str]] | None:
    """The ACL a request sets by header: ``x-amz-acl`` (canned) or the grants of ``x-amz-grant-*``; None: neither."""
    grants = _header_grants(req)
    canned = req.headers.get("x-amz-acl")
    if grants is not None and canned is not None:
        raise S3.InvalidRequest("Specifying both Canned ACLs and Header Grants is not allowed")
    return grants if grants is not None else canned


#: The name the object, bucket and upload handlers import.
canned_acl = request_acl


def parse_access_control_policy(body: bytes) -> list[dict[str, str]]:
    """The grants of an ``AccessControlPolicy`` document (its Owner is the resource's and is not changed)."""
    try:
        root = parse_xml(body)
    except S3.MalformedXML:
        raise S3.MalformedACLError() from None
    lists = find_all(root, "AccessControlList")
    if root.tag != "AccessControlPolicy" or len(lists) != 1:
        raise S3.MalformedACLError()
    grants = []
    for grant in lists[0]:
        grantees = find_all(grant, "Grantee")
        permission = find_text(grant, "Permission", strip=True)
        if grant.tag != "Grant" or len(grantees) != 1 or permission not in _PERMISSIONS:
            raise S3.MalformedACLError()
        element = grantees[0]
        values = {name: find_text(element, name, strip=True) for name in ("ID", "URI", "EmailAddress")}
        kind = element.get("type") or next(
            (k for k, n in (("CanonicalUser", "ID"), ("Group", "URI"), ("AmazonCustomerByEmail", "EmailAddress")) if values[n]),
            None,
        )
        field = {"CanonicalUser": "ID", "Group": "URI", "AmazonCustomerByEmail": "EmailAddress"}.get(kind or "")
        if field is None or not values[field]:
            raise S3.MalformedACLError()
        grants.append(
            {"grantee": _grantee({"ID": "id", "URI": "uri"}.get(field, "emailaddress"), values[field]), "permission": permission}
        )
    return grants


def _account_names(req: S3Request) -> dict[str, str]:
    """Canonical id -> account name, of the accounts the store's keys know (for DisplayName)."""
    accounts = {key.account for key in req.store.keys.every()} | {DEFAULT_ACCOUNT}
    return {canonical_id(account): account for account in accounts}


def _grant(grantee: dict[str, str], permission: str) -> tuple[str, Any]:
    return ("Grant", [("Grantee", grantee), ("Permission", permission)])


def _acl_document(req: S3Request, owner: str, acl: Any, names: dict[str, str], *, bucket_owner: str | None = None) -> bytes:
    owner_element = owner_of(req, owner)
    grants: list[tuple[str, Any]] = []
    if isinstance(acl, list):
        # Explicit grants are shown as stored (the owner's FULL_CONTROL holds whether listed or not).
        for grant in acl:
            grantee = grant["grantee"]
            if grantee in _GROUP_URIS:
                grants.append(_grant({"URI": _GROUP_URIS[grantee]}, grant["permission"]))
            else:
                element = {"ID": grantee, "DisplayName": names[grantee]} if grantee in names else {"ID": grantee}
                grants.append(_grant(element, grant["permission"]))
    else:
        grants.append(_grant({"ID": owner_element["ID"], "DisplayName": owner}, "FULL_CONTROL"))
        if acl in ("public-read", "authenticated-read"):
            grants.append(_grant({"URI": _EVERYONE if acl == "public-read" else _AUTHENTICATED}, "READ"))
        if acl in ("bucket-owner-read", "bucket-owner-full-control") and bucket_owner and bucket_owner != owner:
            other = owner_of(req, bucket_owner)
            permission = "READ" if acl == "bucket-owner-read" else "FULL_CONTROL"
            grants.append(_grant({"ID": other["ID"], "DisplayName": bucket_owner}, permission))
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


async def _requested_acl(req: S3Request) -> str | list[dict[str, str]]:
    """The ACL of a PutBucketAcl / PutObjectAcl: by header or by an AccessControlPolicy body, not both."""
    acl = request_acl(req)
    body = await req.small_body()
    if body.strip():
        if acl is not None:
            raise S3.InvalidRequest("Specifying both an ACL by header and an AccessControlPolicy body is not allowed")
        return parse_access_control_policy(body)
    if acl is None:
        raise S3.MissingSecurityHeader("Your request was missing a required header: x-amz-acl")
    return acl


async def get_bucket_acl(req: S3Request) -> Response:
    def look() -> tuple[dict[str, Any], dict[str, str]]:
        return req.store.bucket_acl(req.bucket, principal=req.principal), _account_names(req)

    settings, names = await req.engine.run(look)
    return xml_response(_acl_document(req, settings.get("owner_account") or DEFAULT_ACCOUNT, settings.get("acl"), names))


async def put_bucket_acl(req: S3Request) -> Response:
    acl = await _requested_acl(req)
    await req.engine.run(lambda: req.store.put_bucket_acl(req.bucket, acl, principal=req.principal))
    return empty_response(200)


async def get_object_acl(req: S3Request) -> Response:
    version = req.version_id()

    def look() -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        info = req.store.object_acl(req.bucket, req.key, version_id=version, principal=req.principal)
        return info.record, req.store.head_bucket(req.bucket), _account_names(req)

    record, settings, names = await req.engine.run(look)
    document = _acl_document(
        req,
        record_owner(record),
        record.get("acl"),
        names,
        bucket_owner=settings.get("owner_account") or DEFAULT_ACCOUNT,
    )
    headers = {"x-amz-version-id": record["version"]} if record["version"] != "null" else {}
    return xml_response(document, headers=headers)


async def put_object_acl(req: S3Request) -> Response:
    acl = await _requested_acl(req)
    version = req.version_id()
    info = await req.engine.run(
        lambda: req.store.put_object_acl(req.bucket, req.key, acl, version_id=version, principal=req.principal)
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
