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


def _op(name: str, handler: Handler, write: bool = False) -> Operation:
    return Operation(name, handler, write)


_ANY: frozenset[str] = frozenset()
#: (level, method) -> routes tried in order: (query tokens of which one must be
#: present, empty for any; whether x-amz-copy-source must be present (True),
#: absent (False) or either (None); the operation). A query token is a
#: parameter name, or ``name=value`` for list-type.
ROUTES: dict[tuple[str, str], list[tuple[frozenset[str], bool | None, Operation]]] = {
    ("service", "GET"): [(_ANY, None, _op("ListBuckets", service.list_buckets))],
    ("bucket", "GET"): [
        (frozenset({"versioning"}), None, _op("GetBucketVersioning", versioning.get_versioning)),
        (frozenset({"versions"}), None, _op("ListObjectVersions", versioning.list_versions)),
        (frozenset({"object-lock"}), None, _op("GetObjectLockConfiguration", lock.get_lock_configuration)),
        (frozenset({"location"}), None, _op("GetBucketLocation", buckets.get_location)),
        (frozenset({"uploads"}), None, _op("ListMultipartUploads", multipart.list_uploads)),
        (frozenset({"list-type=2"}), None, _op("ListObjectsV2", buckets.list_objects_v2)),
        (_ANY, None, _op("ListObjects", buckets.list_objects_v1)),
    ],
    ("bucket", "HEAD"): [(_ANY, None, _op("HeadBucket", buckets.head_bucket))],
    ("bucket", "PUT"): [
        (frozenset({"versioning"}), None, _op("PutBucketVersioning", versioning.put_versioning, True)),
        (frozenset({"object-lock"}), None, _op("PutObjectLockConfiguration", lock.put_lock_configuration, True)),
        (_ANY, None, _op("CreateBucket", buckets.create_bucket, True)),
    ],
    ("bucket", "DELETE"): [(_ANY, None, _op("DeleteBucket", buckets.delete_bucket, True))],
    ("bucket", "POST"): [(frozenset({"delete"}), None, _op("DeleteObjects", objects.delete_objects, True))],
    ("object", "GET"): [
        (frozenset({"retention"}), None, _op("GetObjectRetention", lock.get_retention)),
        (frozenset({"legal-hold"}), None, _op("GetObjectLegalHold", lock.get_legal_hold)),
        (frozenset({"tagging"}), None, _op("GetObjectTagging", tagging.get_tagging)),
        (frozenset({"uploadId"}), None, _op("ListParts", multipart.list_parts)),
        (_ANY, None, _op("GetObject", objects.get_object)),
    ],
    ("object", "HEAD"): [(_ANY, None, _op("HeadObject", objects.head_object))],
    ("object", "PUT"): [
        (frozenset({"retention"}), None, _op("PutObjectRetention", lock.put_retention, True)),
        (frozenset({"legal-hold"}), None, _op("PutObjectLegalHold", lock.put_legal_hold, True)),
        (frozenset({"tagging"}), None, _op("PutObjectTagging", tagging.put_tagging, True)),
        (frozenset({"uploadId", "partNumber"}), True, _op("UploadPartCopy", multipart.upload_part_copy, True)),
        (frozenset({"uploadId", "partNumber"}), False, _op("UploadPart", multipart.upload_part, True)),
        (_ANY, True, _op("CopyObject", objects.copy_object, True)),
        (_ANY, False, _op("PutObject", objects.put_object, True)),
    ],
    ("object", "DELETE"): [
        (frozenset({"tagging"}), None, _op("DeleteObjectTagging", tagging.delete_tagging, True)),
        (frozenset({"uploadId"}), None, _op("AbortMultipartUpload", multipart.abort, True)),
        (_ANY, None, _op("DeleteObject", objects.delete_object, True)),
    ],
    ("object", "POST"): [
        (frozenset({"uploads"}), None, _op("CreateMultipartUpload", multipart.create, True)),
        (frozenset({"uploadId"}), None, _op("CompleteMultipartUpload", multipart.complete, True)),
    ],
}


def resolve(method: str, bucket: str | None, key: str | None, query: dict[str, str], headers: Headers) -> Operation:
    """The operation a request names; NotImplemented / MethodNotAllowed otherwise."""
    unsupported = UNSUPPORTED.intersection(query)
    if unsupported:
        raise S3.S3NotImplemented(f"The {sorted(unsupported)[0]} subresource is not implemented by objfs")
    level = "service" if bucket is None else "bucket" if key is None else "object"
    if (level == "bucket" and OBJECT_ONLY.intersection(query)) or (level == "object" and BUCKET_ONLY.intersection(query)):
        raise S3.MethodNotAllowed()
    tokens = set(query)
    if "list-type" in query:
        tokens.add(f"list-type={query['list-type']}")
    copy = "x-amz-copy-source" in headers
    for needs, wants_copy, operation in ROUTES.get((level, method), ()):
        if (not needs or needs & tokens) and (wants_copy is None or wants_copy == copy):
            return operation
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
        self.auth = Authenticator(engine.store, settings.region)

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
                operation=op.name,
            )
            await authorize(s3req)
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
