"""The service resource: ListBuckets."""

from __future__ import annotations

import functools

from starlette.responses import Response

from ..context import S3Request, xml_response
from ..xmlio import build, iso8601


def owner_of(req: S3Request) -> dict[str, str]:
    """The Owner element: one store, one owner, named after the store."""
    return {"ID": "objfs", "DisplayName": "objfs"}


async def list_buckets(req: S3Request) -> Response:
    """Buckets the key may access, by name (the engine shows a bucket-limited key only its buckets)."""
    settings = await req.engine.run(functools.partial(req.store.list_buckets, principal=req.principal))
    entries = [
        ("Bucket", {"Name": b["name"], "CreationDate": iso8601(b["created"]), "BucketRegion": req.settings.region})
        for b in sorted(settings, key=lambda b: b["name"])
    ]
    body = build("ListAllMyBucketsResult", [("Owner", owner_of(req)), ("Buckets", entries or "")])
    return xml_response(body)
