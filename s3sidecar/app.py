"""The ASGI application: addressing, routing, authentication and S3 error rendering.

Per request, from the headers alone (admission): the header section is
size-checked, the bucket and key are found (virtual-host style when the Host
is ``<bucket>.<domain>`` for a configured domain, path style otherwise), the
operation is chosen from the method and the query's subresources, the
signature is verified (the payload hash later, as the body streams), the
key's rights are checked (:func:`s3sidecar.auth.authorize`) and the declared
body size too. A request refused there is answered at once, with
``Connection: close``, without reading its body, sending ``100 Continue`` or
taking a request slot. An admitted request takes a slot and one handler (one
module per resource, in :mod:`s3sidecar.handlers`) answers. Every failure
leaves as an S3 XML error.

``create_app()`` with no arguments builds the app for a Hypercorn worker
process from the environment (:data:`~s3sidecar.settings.STORE_ENV`), which
is how several worker processes each open their own Store.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import trio
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from objfs.admin.meter import RequestMeter
from objfs.store import Store
from objfs.stores import open_store

from . import continue100, cors, sse
from . import errors as S3
from .auth import Authenticator, authorize, principal_of
from .bodies import drain
from .bridge import Engine
from .context import XML, S3Request
from .handlers import access as access_handlers
from .handlers import (
    attributes,
    buckets,
    lifecycle,
    lock,
    multipart,
    objects,
    postobject,
    replication,
    restore,
    service,
    tagging,
    versioning,
)
from .handlers import cors as cors_handlers
from .settings import STORE_ENV, Settings

log = logging.getLogger(__name__)

Handler = Callable[[S3Request], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    name: str
    handler: Handler
    write: bool = False
    #: What the body is: "object" (PutObject, UploadPart: up to max_object_size),
    #: "xml" (a document up to max_xml_bytes) or "" (none is read).
    body: str = ""
    #: Answered without a signature (CORS preflight; a POST upload proves
    #: itself by its signed policy): the handler gets no key and no principal.
    anonymous: bool = False


# Subresources we know S3 has but this sidecar does not implement: answered
# with NotImplemented rather than silently treated as a plain GET/PUT.
UNSUPPORTED = frozenset(
    "accelerate analytics intelligent-tiering inventory logging "
    "metrics notification ownershipControls "
    "requestPayment select torrent website".split()
)
# Subresources of one level only: on the other level they would otherwise
# fall through to a different operation (PUT /bucket?retention is not CreateBucket).
BUCKET_ONLY = frozenset(
    (
        "versioning",
        "versions",
        "object-lock",
        "cors",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "encryption",
        "lifecycle",
        "replication",
    )
)
OBJECT_ONLY = frozenset(("retention", "legal-hold", "attributes"))


def _op(name: str, handler: Handler, write: bool = False, body: str = "", anonymous: bool = False) -> Operation:
    return Operation(name, handler, write, body, anonymous)


PREFLIGHT = _op("PreflightRequest", cors_handlers.preflight, anonymous=True)


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
        (frozenset({"tagging"}), None, _op("GetBucketTagging", tagging.get_bucket_tagging)),
        (frozenset({"cors"}), None, _op("GetBucketCors", cors_handlers.get_cors)),
        (frozenset({"acl"}), None, _op("GetBucketAcl", access_handlers.get_bucket_acl)),
        (frozenset({"policy"}), None, _op("GetBucketPolicy", access_handlers.get_bucket_policy)),
        (frozenset({"policyStatus"}), None, _op("GetBucketPolicyStatus", access_handlers.get_policy_status)),
        (frozenset({"publicAccessBlock"}), None, _op("GetPublicAccessBlock", access_handlers.get_public_access_block)),
        (frozenset({"encryption"}), None, _op("GetBucketEncryption", sse.get_bucket_encryption)),
        (frozenset({"lifecycle"}), None, _op("GetBucketLifecycleConfiguration", lifecycle.get_lifecycle)),
        (frozenset({"replication"}), None, _op("GetBucketReplication", replication.get_replication)),
        (frozenset({"uploads"}), None, _op("ListMultipartUploads", multipart.list_uploads)),
        (frozenset({"list-type=2"}), None, _op("ListObjectsV2", buckets.list_objects_v2)),
        (_ANY, None, _op("ListObjects", buckets.list_objects_v1)),
    ],
    ("bucket", "HEAD"): [(_ANY, None, _op("HeadBucket", buckets.head_bucket))],
    ("bucket", "OPTIONS"): [(_ANY, None, PREFLIGHT)],
    ("object", "OPTIONS"): [(_ANY, None, PREFLIGHT)],
    ("bucket", "PUT"): [
        (frozenset({"versioning"}), None, _op("PutBucketVersioning", versioning.put_versioning, True, "xml")),
        (frozenset({"object-lock"}), None, _op("PutObjectLockConfiguration", lock.put_lock_configuration, True, "xml")),
        (frozenset({"tagging"}), None, _op("PutBucketTagging", tagging.put_bucket_tagging, True, "xml")),
        (frozenset({"cors"}), None, _op("PutBucketCors", cors_handlers.put_cors, True, "xml")),
        (frozenset({"acl"}), None, _op("PutBucketAcl", access_handlers.put_bucket_acl, True, "xml")),
        (frozenset({"policy"}), None, _op("PutBucketPolicy", access_handlers.put_bucket_policy, True, "xml")),
        (
            frozenset({"publicAccessBlock"}),
            None,
            _op("PutPublicAccessBlock", access_handlers.put_public_access_block, True, "xml"),
        ),
        (frozenset({"encryption"}), None, _op("PutBucketEncryption", sse.put_bucket_encryption, True, "xml")),
        (frozenset({"lifecycle"}), None, _op("PutBucketLifecycleConfiguration", lifecycle.put_lifecycle, True, "xml")),
        (frozenset({"replication"}), None, _op("PutBucketReplication", replication.put_replication, True, "xml")),
        (_ANY, None, _op("CreateBucket", buckets.create_bucket, True, "xml")),
    ],
    ("bucket", "DELETE"): [
        (frozenset({"tagging"}), None, _op("DeleteBucketTagging", tagging.delete_bucket_tagging, True)),
        (frozenset({"cors"}), None, _op("DeleteBucketCors", cors_handlers.delete_cors, True)),
        (frozenset({"policy"}), None, _op("DeleteBucketPolicy", access_handlers.delete_bucket_policy, True)),
        (
            frozenset({"publicAccessBlock"}),
            None,
            _op("DeletePublicAccessBlock", access_handlers.delete_public_access_block, True),
        ),
        (frozenset({"encryption"}), None, _op("DeleteBucketEncryption", sse.delete_bucket_encryption, True)),
        (frozenset({"lifecycle"}), None, _op("DeleteBucketLifecycleConfiguration", lifecycle.delete_lifecycle, True)),
        (frozenset({"replication"}), None, _op("DeleteBucketReplication", replication.delete_replication, True)),
        (_ANY, None, _op("DeleteBucket", buckets.delete_bucket, True)),
    ],
    ("bucket", "POST"): [
        (frozenset({"delete"}), None, _op("DeleteObjects", objects.delete_objects, True, "xml")),
        (_ANY, None, _op("PostObject", postobject.post_object, True, "object", anonymous=True)),
    ],
    ("object", "GET"): [
        (frozenset({"retention"}), None, _op("GetObjectRetention", lock.get_retention)),
        (frozenset({"legal-hold"}), None, _op("GetObjectLegalHold", lock.get_legal_hold)),
        (frozenset({"tagging"}), None, _op("GetObjectTagging", tagging.get_tagging)),
        (frozenset({"acl"}), None, _op("GetObjectAcl", access_handlers.get_object_acl)),
        (frozenset({"uploadId"}), None, _op("ListParts", multipart.list_parts)),
        (frozenset({"attributes"}), None, _op("GetObjectAttributes", attributes.get_object_attributes)),
        (_ANY, None, _op("GetObject", objects.get_object)),
    ],
    ("object", "HEAD"): [(_ANY, None, _op("HeadObject", objects.head_object))],
    ("object", "PUT"): [
        (frozenset({"retention"}), None, _op("PutObjectRetention", lock.put_retention, True, "xml")),
        (frozenset({"legal-hold"}), None, _op("PutObjectLegalHold", lock.put_legal_hold, True, "xml")),
        (frozenset({"tagging"}), None, _op("PutObjectTagging", tagging.put_tagging, True, "xml")),
        (frozenset({"acl"}), None, _op("PutObjectAcl", access_handlers.put_object_acl, True, "xml")),
        (frozenset({"uploadId", "partNumber"}), True, _op("UploadPartCopy", multipart.upload_part_copy, True)),
        (frozenset({"uploadId", "partNumber"}), False, _op("UploadPart", multipart.upload_part, True, "object")),
        (_ANY, True, _op("CopyObject", objects.copy_object, True)),
        (_ANY, False, _op("PutObject", objects.put_object, True, "object")),
    ],
    ("object", "DELETE"): [
        (frozenset({"tagging"}), None, _op("DeleteObjectTagging", tagging.delete_tagging, True)),
        (frozenset({"uploadId"}), None, _op("AbortMultipartUpload", multipart.abort, True)),
        (_ANY, None, _op("DeleteObject", objects.delete_object, True)),
    ],
    ("object", "POST"): [
        (frozenset({"uploads"}), None, _op("CreateMultipartUpload", multipart.create, True)),
        (frozenset({"uploadId"}), None, _op("CompleteMultipartUpload", multipart.complete, True, "xml")),
        (frozenset({"restore"}), None, _op("RestoreObject", restore.restore_object, True, "xml")),
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


def _error_response(err: S3.S3Error, resource: str, request_id: str, head: bool, *, close: bool = False) -> Response:
    headers = {"x-amz-request-id": request_id, **err.headers}
    if close:
        headers["connection"] = "close"
    body = b"" if head else err.to_xml(resource, request_id)
    return Response(body, status_code=err.status, headers=headers, media_type=XML if body else None)


def check_body_size(req: S3Request, kind: str) -> None:
    """Refuse a body too large for its operation from the declared length alone, before any byte is read."""
    if kind == "object":
        req.declared_length(required=True)  # MissingContentLength / EntityTooLarge
    elif kind == "xml":
        declared = req.declared_length(required=False)
        if declared is not None and declared > req.settings.max_xml_bytes:
            raise S3.MalformedXML("The XML you provided was larger than the maximum allowed size")


def _expects_continue(headers: Headers) -> bool:
    return "100-continue" in headers.get("expect", "").lower()


class S3App:
    """The request pipeline: admission, then one handler in a request slot.

    Admission (headers only, nothing of the body read, no ``100 Continue``
    sent): header size, addressing, routing, SigV4 signature, the
    :func:`~s3sidecar.auth.authorize` hook, the declared body size. A request
    refused there is answered at once with ``Connection: close``. Only then
    does it take one of ``max_requests`` slots (none free: SlowDown); its
    handler reads the body, which is what sends ``100 Continue``
    (:mod:`s3sidecar.continue100`). Requests being authenticated are
    bounded separately (``max_authenticating``).
    """

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.auth = Authenticator(engine.store, settings.region)
        self.in_flight = 0
        self.authenticating = 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        meter = RequestMeter("s3", scope, receive, send)  # metrics and the access log (objfs.admin.meter)
        try:
            await self._serve(scope, meter.receive, meter.send, meter)
        finally:
            meter.finished()

    async def _serve(self, scope: dict, receive: Callable, send: Callable, meter: RequestMeter) -> None:
        request = Request(scope, receive)
        request_id = secrets.token_hex(8).upper()
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        resource = raw_path.decode("latin-1")
        head = request.method == "HEAD"
        try:
            s3req, op = await self._admit(request, raw_path, request_id)
        except S3.S3Error as err:
            if err.status >= 500:
                log.warning("%s %s -> %s: %s", request.method, resource, err.code, err.message)
            await self._refuse(request, _error_response(err, resource, request_id, head, close=True), send)
            return
        except Exception:
            log.exception("internal error on %s %s", request.method, resource)
            await self._refuse(request, _error_response(S3.InternalError(), resource, request_id, head, close=True), send)
            return
        meter.note(op.name, s3req.bucket, s3req.key, s3req.principal.name if s3req.principal else None)
        if self.in_flight >= self.settings.max_requests:
            err = S3.SlowDown(headers={"retry-after": "1"})
            await self._refuse(request, _error_response(err, resource, request_id, head, close=True), send)
            return
        self.in_flight += 1
        try:
            response = await self._handle(op, s3req, resource)
            response.headers["x-amz-request-id"] = request_id
            if "origin" in s3req.headers and s3req.bucket and op is not PREFLIGHT:
                response.headers.update(await self._cors_headers(s3req))
            await response(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _cors_headers(self, req: S3Request) -> dict[str, str]:
        """The CORS headers the bucket's rules give a browser's actual request (none if no rule matches)."""
        try:
            settings = await self.engine.run(self.engine.store.head_bucket, req.bucket)
        except S3.S3Error:
            return {}
        rule = cors.matching_rule(settings.get("cors") or [], req.headers["origin"], req.method, [])
        return cors.response_headers(rule, req.headers["origin"]) if rule is not None else {}

    async def _refuse(self, request: Request, response: Response, send: Callable) -> None:
        """Send a refusal at once, then close; its body is never processed.

        A client that sent its body without waiting for ``100 Continue``
        would get a reset for the bytes still arriving, and could lose the
        answer with it: after the answer, up to ``refuse_linger_bytes`` (for
        at most ``refuse_linger_seconds``) are read and dropped before the
        connection closes. A client waiting for ``100 Continue`` sends nothing.
        """
        headers = request.headers
        body_coming = not _expects_continue(headers) and (
            headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in headers
        )
        await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body, "more_body": body_coming})
        if not body_coming:
            return
        seen = 0
        with trio.move_on_after(self.settings.refuse_linger_seconds):
            while seen < self.settings.refuse_linger_bytes:
                message = await request.receive()
                seen += len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _admit(self, request: Request, raw_path: bytes, request_id: str) -> tuple[S3Request, Operation]:
        """The authenticated, authorised, size-checked request, or the S3 error refusing it."""
        scope = request.scope
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        if sum(len(n) + len(v) + 4 for n, v in raw_headers) > self.settings.max_header_bytes:
            raise S3.RequestHeaderSectionTooLarge(MaxSizeAllowed=self.settings.max_header_bytes)
        headers = request.headers
        bucket, key = split_target(raw_path, headers.get("host", ""), self.settings.domains)
        query_string: bytes = scope.get("query_string", b"")
        query: dict[str, str] = {}
        for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, encoding="utf-8"):
            query.setdefault(name, value)
        op = resolve(request.method, bucket, key, query, headers)
        access: Any = None
        signed: Any = None
        if not op.anonymous:
            if self.authenticating >= self.settings.max_authenticating:
                raise S3.SlowDown(headers={"retry-after": "1"})
            self.authenticating += 1
            try:
                access, signed = await self.auth.authenticate(request.method, raw_path, query_string, raw_headers)
            finally:
                self.authenticating -= 1
        s3req = S3Request(
            request=request,
            method=request.method,
            bucket=bucket,
            key=key,
            query=query,
            headers=headers,
            access=access,
            signed=signed,
            engine=self.engine,
            settings=self.settings,
            principal=principal_of(
                access,
                source_ip=(scope.get("client") or ("", 0))[0],
                secure_transport=scope.get("scheme") == "https",
                request_id=request_id,
            )
            if not op.anonymous
            else None,
            request_id=request_id,
            operation=op.name,
            write=op.write,
        )
        if not op.anonymous:
            await authorize(s3req)
        check_body_size(s3req, op.body)
        return s3req, op

    async def _handle(self, op: Operation, s3req: S3Request, resource: str) -> Response:
        """The handler's response, or its error as an S3 error response."""
        head = s3req.method == "HEAD"
        try:
            return await op.handler(s3req)
        except S3.S3Error as err:
            if err.status >= 500:
                log.warning("%s %s -> %s: %s", s3req.method, resource, err.code, err.message)
            response = _error_response(err, resource, s3req.request_id, head)
        except Exception:
            log.exception("internal error on %s %s", s3req.method, resource)
            response = _error_response(S3.InternalError(), resource, s3req.request_id, head)
        if not await self._drain(s3req):
            response.headers["connection"] = "close"
        return response

    async def _drain(self, s3req: S3Request) -> bool:
        """Whether the connection can carry another request after an error answer.

        A signed client still sending its body would see a reset instead of
        our error: read a bounded amount first. One that waits for
        ``100 Continue`` and was not sent it will not send its body at all.
        """
        source = s3req.source
        if source.ended or s3req.method not in ("PUT", "POST"):
            return True
        if not source.started and _expects_continue(s3req.headers):
            return False
        return await drain(source)


class Sidecar:
    """The ASGI application: lifespan (open and close the engine) and HTTP requests to :class:`S3App`."""

    def __init__(self, store: Store | str | os.PathLike[str], settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.app: S3App | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            assert self.app is not None, "the ASGI server must run the lifespan protocol"
            await self.app(scope, receive, send)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        engine: Engine | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if isinstance(self.store, Store):
                        engine = Engine(self.store, self.settings)
                    else:
                        opened = await trio.to_thread.run_sync(open_store, Path(self.store))
                        engine = Engine(opened, self.settings, owns_store=True)
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    raise
                self.app = S3App(engine, self.settings)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if engine is not None:
                    await trio.to_thread.run_sync(engine.close)
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(store: Store | str | os.PathLike[str] | None = None, settings: Settings | None = None) -> Sidecar:
    """The sidecar's ASGI app over ``store`` (an open Store, or a path opened at startup).

    With no arguments the store path and settings come from the environment
    (Hypercorn worker processes). An open Store is not closed by the app; one
    the app opened is closed at shutdown. Installs :mod:`s3sidecar.continue100`
    in this process.
    """
    if store is None:
        store = os.environ[STORE_ENV]
        settings = settings or Settings.from_env()
    continue100.install()
    return Sidecar(store, settings or Settings())
