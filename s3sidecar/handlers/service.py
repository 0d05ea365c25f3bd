"""The service resource: ListBuckets."""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any

from starlette.responses import Response

from objfs.store import DEFAULT_ACCOUNT, canonical_id

from .. import errors as S3
from ..context import S3Request, xml_response
from ..xmlio import build, iso8601


def encode_token(marker: str) -> str:
    """An opaque continuation token for a listing that resumes after ``marker``."""
    return base64.urlsafe_b64encode(marker.encode("utf-8")).decode("ascii")


def decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        raise S3.InvalidArgument(
            "The continuation token provided is incorrect", ArgumentName="continuation-token", ArgumentValue=token
        ) from None


def owner_of(req: S3Request, account: str | None = None) -> dict[str, str]:
    """An Owner element: ``account``'s, or by default the requesting key's account."""
    if account is None:
        account = req.access.account if req.access is not None else DEFAULT_ACCOUNT
    return {"ID": canonical_id(account), "DisplayName": account}


def record_owner(record: dict[str, Any]) -> str:
    """The account that wrote an object version (the default account for versions written before accounts)."""
    return record.get("owner") or DEFAULT_ACCOUNT


MAX_BUCKETS = 10000


def _max_buckets(req: S3Request) -> int | None:
    text = req.query.get("max-buckets")
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) <= MAX_BUCKETS:
        raise S3.InvalidArgument(
            f"Argument max-buckets must be an integer between 1 and {MAX_BUCKETS}", ArgumentName="max-buckets", ArgumentValue=text
        )
    return int(text)


async def list_buckets(req: S3Request) -> Response:
    """Buckets the key may access, by name (the engine shows a bucket-limited key only its buckets).

    ``max-buckets`` pages the answer; ``continuation-token`` (the last name
    of the previous page, encoded) continues it; ``prefix`` filters names.
    """
    limit = _max_buckets(req)
    token = req.query.get("continuation-token")
    after = decode_token(token) if token else ""
    prefix = req.query.get("prefix", "")
    settings = await req.engine.run(functools.partial(req.store.list_buckets, principal=req.principal))
    names = sorted((b for b in settings if b["name"] > after and b["name"].startswith(prefix)), key=lambda b: b["name"])
    page = names if limit is None else names[:limit]
    entries = [
        ("Bucket", {"Name": b["name"], "CreationDate": iso8601(b["created"]), "BucketRegion": req.settings.region}) for b in page
    ]
    fields: list[tuple[str, Any]] = [("Owner", owner_of(req)), ("Buckets", entries or "")]
    if len(page) < len(names):
        fields.append(("ContinuationToken", encode_token(page[-1]["name"])))
    if "prefix" in req.query:
        fields.append(("Prefix", prefix))
    return xml_response(build("ListAllMyBucketsResult", fields))
