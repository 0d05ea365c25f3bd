"""PostObject: an upload from an HTML form, authorised by its signed POST policy (:mod:`s3sidecar.postpolicy`).

The request carries no SigV4 header: the form's ``x-amz-credential`` names
the key, whose rights the engine checks (``Store.authorize``) before the
object is stored as that key's principal. The answer follows
``success_action_redirect`` (303 to it, with bucket, key and ETag) or
``success_action_status`` (200, 201 with a PostResponse document, 204).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from starlette.responses import Response

from objfs.store import ObjectInfo

from .. import errors as S3
from .. import postpolicy
from ..auth import principal_of
from ..context import STANDARD_HEADERS, S3Request, empty_response, quote_etag, xml_response
from ..xmlio import build

META_PREFIX = "x-amz-meta-"


def _location(req: S3Request, key: str) -> str:
    host = req.headers.get("host", "")
    return f"{req.request.url.scheme}://{host}/{req.bucket}/{quote(key)}"


def _answer(req: S3Request, fields: dict[str, str], key: str, info: ObjectInfo) -> Response:
    etag = quote_etag(info.etag)
    headers = {"etag": etag, "location": _location(req, key)}
    if info.version_id != "null":
        headers["x-amz-version-id"] = info.version_id
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect:
        parts = urlsplit(redirect)
        if parts.scheme in ("http", "https"):
            extra = urlencode({"bucket": req.bucket, "key": key, "etag": etag})
            query = f"{parts.query}&{extra}" if parts.query else extra
            return empty_response(303, {**headers, "location": urlunsplit(parts._replace(query=query))})
    status = fields.get("success_action_status", "204")
    if status == "201":
        body = build(
            "PostResponse",
            {"Location": _location(req, key), "Bucket": req.bucket, "Key": key, "ETag": etag},
            namespace=False,
        )
        return xml_response(body, 201, headers)
    return empty_response(200 if status == "200" else 204, headers)


async def post_object(req: S3Request) -> Response:
    form = await postpolicy.read_form(req.source, req.headers.get("content-type", ""), req.settings.max_object_size)
    assert form.file is not None
    try:
        return await _store(req, form)
    finally:
        form.file.close()


async def _store(req: S3Request, form: postpolicy.Form) -> Response:
    fields = form.fields
    if "policy" not in fields or "x-amz-signature" not in fields:
        # Anonymous uploads would need a bucket that allows them; none does.
        raise S3.AccessDenied("Anonymous POST uploads are not allowed")
    store = req.store

    def secret_of(access_key: str) -> str | None:
        key = store.keys.get(access_key)
        return key.secret_key if key is not None else None

    access_key = await req.engine.run(postpolicy.verify_signature, fields, secret_of, req.settings.region)
    postpolicy.check_policy(fields, req.bucket or "", form.size, time.time())
    key = fields.get("key", "")
    if not key:
        raise S3.InvalidArgument("Bucket POST must contain a field named 'key'.", ArgumentName="key")
    key = key.replace("${filename}", form.filename)
    access = await req.engine.run(store.keys.get, access_key)
    principal = principal_of(access)
    headers = {name: fields[name] for name in STANDARD_HEADERS if name in fields}
    metadata = {name[len(META_PREFIX) :]: value for name, value in fields.items() if name.startswith(META_PREFIX)}
    file = form.file

    def put() -> ObjectInfo:
        # Refused before anything is written if the key may not write here.
        store.authorize(principal, "write", req.bucket, key)
        return store.put_object(
            req.bucket,
            key,
            file,
            length=form.size,
            content_type=fields.get("content-type") or None,
            metadata=metadata,
            headers=headers,
            principal=principal,
        )

    info: Any = await req.engine.run_upload(put)
    return _answer(req, fields, key, info)
