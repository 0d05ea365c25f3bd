"""The ASGI application: addressing, routing, authentication and S3 error rendering.

Per request: the header section is size-checked, the bucket and key are
found (virtual-host style when the Host is ``<bucket>.<domain>`` for a
configured domain, path style otherwise), the operation is chosen from the
method and the query's subresources, the signature is verified, the key's
rights are checked, and one handler (one module per resource, in
:mod:`s3sidecar.handlers`) answers. Every failure leaves as an S3 XML error.

``create_app()`` with no arguments builds the app for a Hypercorn worker
process from the environment (:data:`~s3sidecar.settings.STORE_ENV`), which
is how several worker processes each open their own Store.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote_to_bytes

import trio
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from objfs.store import Store

from . import errors as S3
from .auth import Authenticator, authorize, principal_of
from .bodies import BodySource, drain
from .bridge import Engine
from .context import XML, S3Request
from .handlers import buckets, lock, multipart, objects, service, tagging, versioning
from .settings import STORE_ENV, Settings

log = logging.getLogger(__name__)

Handler = Callable[[S3Request], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    name: str
    handler: Handler
    write: bool = False


# Subresources we know S3 has but this sidecar does not implement: answered
# with NotImplemented rather than silently treated as a plain GET/PUT.
UNSUPPORTED = frozenset(
    "accelerate acl analytics attributes cors encryption intelligent-tiering inventory lifecycle logging "
    "metrics notification ownershipControls policy policyStatus publicAccessBlock replication "
    "requestPayment restore select torrent website".split()
)
# Subresources of one level only: on the other level they would otherwise
# fall through to a different operation (PUT /bucket?retention is not CreateBucket).
BUCKET_ONLY = frozenset(("versioning", "versions", "object-lock"))
OBJECT_ONLY = frozenset(("retention", "legal-hold"))

METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE"]


def resolve(method: str, bucket: str | None, key: str | None, query: dict[str, str], headers: Headers) -> Operation:
    """The operation a request names; NotImplemented / MethodNotAllowed otherwise."""
    unsupported = UNSUPPORTED.intersection(query)
    if unsupported:
        raise S3.S3NotImplemented(f"The {sorted(unsupported)[0]} subresource is not implemented by objfs")
    if bucket is None:
        if method == "GET":
            return Operation("ListBuckets", service.list_buckets)
        raise S3.MethodNotAllowed()
    if key is None:
        if OBJECT_ONLY.intersection(query):
            raise S3.MethodNotAllowed()
        if method == "GET":
            if "versioning" in query:
                return Operation("GetBucketVersioning", versioning.get_versioning)
            if "versions" in query:
                return Operation("ListObjectVersions", versioning.list_versions)
            if "object-lock" in query:
                return Operation("GetObjectLockConfiguration", lock.get_lock_configuration)
            if "location" in query:
                return Operation("GetBucketLocation", buckets.get_location)
            if "uploads" in query:
                return Operation("ListMultipartUploads", multipart.list_uploads)
            if query.get("list-type") == "2":
                return Operation("ListObjectsV2", buckets.list_objects_v2)
            return Operation("ListObjects", buckets.list_objects_v1)
        if method == "HEAD":
            return Operation("HeadBucket", buckets.head_bucket)
        if method == "PUT":
            if "versioning" in query:
                return Operation("PutBucketVersioning", versioning.put_versioning, write=True)
            if "object-lock" in query:
                return Operation("PutObjectLockConfiguration", lock.put_lock_configuration, write=True)
            return Operation("CreateBucket", buckets.create_bucket, write=True)
        if method == "DELETE":
            return Operation("DeleteBucket", buckets.delete_bucket, write=True)
        if method == "POST" and "delete" in query:
            return Operation("DeleteObjects", objects.delete_objects, write=True)
        raise S3.MethodNotAllowed()
    if BUCKET_ONLY.intersection(query):
        raise S3.MethodNotAllowed()
    copy = "x-amz-copy-source" in headers
    if method == "GET":
        if "retention" in query:
            return Operation("GetObjectRetention", lock.get_retention)
        if "legal-hold" in query:
            return Operation("GetObjectLegalHold", lock.get_legal_hold)
        if "tagging" in query:
            return Operation("GetObjectTagging", tagging.get_tagging)
        if "uploadId" in query:
            return Operation("ListParts", multipart.list_parts)
        return Operation("GetObject", objects.get_object)
    if method == "HEAD":
        return Operation("HeadObject", objects.head_object)
    if method == "PUT":
        if "retention" in query:
            return Operation("PutObjectRetention", lock.put_retention, write=True)
        if "legal-hold" in query:
            return Operation("PutObjectLegalHold", lock.put_legal_hold, write=True)
        if "tagging" in query:
            return Operation("PutObjectTagging", tagging.put_tagging, write=True)
        if "uploadId" in query or "partNumber" in query:
            if copy:
                return Operation("UploadPartCopy", multipart.upload_part_copy, write=True)
            return Operation("UploadPart", multipart.upload_part, write=True)
        if copy:
            return Operation("CopyObject", objects.copy_object, write=True)
        return Operation("PutObject", objects.put_object, write=True)
    if method == "DELETE":
        if "tagging" in query:
            return Operation("DeleteObjectTagging", tagging.delete_tagging, write=True)
        if "uploadId" in query:
            return Operation("AbortMultipartUpload", multipart.abort, write=True)
        return Operation("DeleteObject", objects.delete_object, write=True)
    if method == "POST":
        if "uploads" in query:
            return Operation("CreateMultipartUpload", multipart.create, write=True)
        if "uploadId" in query:
            return Operation("CompleteMultipartUpload", multipart.complete, write=True)
    raise S3.MethodNotAllowed()


def split_target(raw_path: bytes, host: str, domains: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(bucket, key) from the request target and Host; either may be None."""
    try:
        path = unquote_to_bytes(raw_path.split(b"?", 1)[0]).decode("utf-8")
    except UnicodeDecodeError:
        raise S3.InvalidURI() from None
    hostname = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else host
    # The endpoint's own name (s3.localhost) is path style even if a shorter domain (localhost) would match.
    for domain in domains if hostname not in domains else ():
        if hostname.endswith("." + domain):
            bucket = hostname[: -len(domain) - 1]
            key = path[1:] if path.startswith("/") else path
            return bucket, key or None
    trimmed = path[1:] if path.startswith("/") else path
    bucket, _, key = trimmed.partition("/")
    return bucket or None, key or None


def _error_response(err: S3.S3Error, resource: str, request_id: str, head: bool) -> Response:
    headers = {"x-amz-request-id": request_id, **err.headers}
    body = b"" if head else err.to_xml(resource, request_id)
    response = Response(body, status_code=err.status, headers=headers, media_type=XML if body else None)
    return response


class S3App:
    """The request pipeline (everything but the ASGI plumbing Starlette provides)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.auth = Authenticator(engine.store.root, settings.region)

    async def __call__(self, request: Request) -> Response:
        request_id = secrets.token_hex(8).upper()
        scope = request.scope
        method = request.method
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        head = method == "HEAD"
        resource = raw_path.decode("latin-1")
        s3req: S3Request | None = None
        try:
            raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
            if sum(len(n) + len(v) + 4 for n, v in raw_headers) > self.settings.max_header_bytes:
                raise S3.RequestHeaderSectionTooLarge(MaxSizeAllowed=self.settings.max_header_bytes)
            headers = request.headers
            bucket, key = split_target(raw_path, headers.get("host", ""), self.settings.domains)
            query_string: bytes = scope.get("query_string", b"")
            query: dict[str, str] = {}
            for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, encoding="utf-8"):
                query.setdefault(name, value)
            op = resolve(method, bucket, key, query, headers)
            access, signed = await self.auth.authenticate(method, raw_path, query_string, raw_headers)
            authorize(access, write=op.write, bucket=bucket)
            s3req = S3Request(
                request=request,
                method=method,
                bucket=bucket,
                key=key,
                query=query,
                headers=headers,
                access=access,
                signed=signed,
                engine=self.engine,
                settings=self.settings,
                principal=principal_of(access),
                request_id=request_id,
            )
            response = await op.handler(s3req)
        except S3.S3Error as err:
            if err.status >= 500:
                log.warning("%s %s -> %s: %s", method, resource, err.code, err.message)
            response = _error_response(err, resource, request_id, head)
            await self._drain(request, s3req, response)
        except Exception:
            log.exception("internal error on %s %s", method, resource)
            response = _error_response(S3.InternalError(), resource, request_id, head)
            await self._drain(request, s3req, response)
        response.headers["x-amz-request-id"] = request_id
        return response

    async def _drain(self, request: Request, s3req: S3Request | None, response: Response) -> None:
        # A client still sending its body would see a reset instead of our
        # error; read a bounded amount first, else close the connection.
        if request.method not in ("PUT", "POST"):
            return
        source = s3req.source if s3req is not None else BodySource(request.receive, self.settings.body_timeout)
        if not await drain(source):
            response.headers["connection"] = "close"


class ConcurrencyLimit:
    """Outermost ASGI layer: more than ``limit`` requests in flight -> 503 SlowDown at once."""

    def __init__(self, app: Callable, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            err = S3.SlowDown()
            body = err.to_xml(scope.get("path", ""), "")
            await send(
                {
                    "type": "http.response.start",
                    "status": err.status,
                    "headers": [
                        (b"content-type", XML.encode()),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", b"1"),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def create_app(store: Store | str | os.PathLike[str] | None = None, settings: Settings | None = None) -> ConcurrencyLimit:
    """The sidecar's ASGI app over ``store`` (an open Store, or a path opened at startup).

    With no arguments the store path and settings come from the environment
    (Hypercorn worker processes). An open Store is not closed by the app; one
    the app opened is closed at shutdown.
    """
    if store is None:
        store = os.environ[STORE_ENV]
        settings = settings or Settings.from_env()
    settings = settings or Settings()
    state: dict[str, S3App] = {}

    async def endpoint(request: Request) -> Response:
        return await state["app"](request)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if isinstance(store, Store):
            engine = Engine(store, settings)
        else:
            opened = await trio.to_thread.run_sync(Store.open, Path(store))
            engine = Engine(opened, settings, owns_store=True)
        state["app"] = S3App(engine, settings)
        try:
            yield
        finally:
            await trio.to_thread.run_sync(engine.close)

    starlette = Starlette(routes=[Route("/{path:path}", endpoint, methods=METHODS)], lifespan=lifespan)
    return ConcurrencyLimit(starlette, settings.max_requests)
