"""The ASGI application of the DICOMweb front: routes under ``/dicom-web``, authentication, CORS, errors.

Every request but a CORS preflight is authenticated (:mod:`.auth`) and its
right checked by the engine before any work (reads need the bucket in the
key's scope, STOW the write right too). Every failure leaves as a plain-text
HTTP error (:class:`~.engine.HTTPError`); engine errors are mapped in one
table (:data:`.engine.ENGINE_ERRORS`). :func:`serve_dicomweb` runs it on
Hypercorn (trio) in the current trio run, as ``objfs serve`` and ``objfs
dicomweb`` do.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from objfs.httpserve import serve_asgi
from objfs.store import BucketAlreadyExists, Principal, Store

from . import qido, rendering
from .auth import authenticate, authorize
from .engine import Engine, HTTPError
from .parts import closing, content_type, new_boundary, parse_accept, part_header
from .stow import Stow, receive
from .wado import EXPLICIT_LE, Wado, bulk_value, frames_of

log = logging.getLogger(__name__)

PREFIX = "/dicom-web"
DICOM_JSON = "application/dicom+json"


class Front:
    """The state shared by the routes: the engine bridge, WADO's metadata cache, STOW's spool."""

    def __init__(self, store: Store, bucket: str) -> None:
        try:  # as the gateway does: the archive's bucket exists before the first store
            store.create_bucket(bucket, principal=Principal.system("gateway", who="dicomweb"))
        except BucketAlreadyExists:
            pass
        self.engine = Engine(store, bucket)
        self.wado = Wado(self.engine)
        self.stow = Stow(self.engine)


def _base(request: Request) -> str:
    """The URL prefix of the URIs we hand out (RetrieveURL, BulkDataURI).

    From the Host header; some clients (dicomweb-client) send the host name
    without the port they connected to, so a direct connection's port is
    added back (behind a proxy, X-Forwarded-Host, the Host is taken as is).
    """
    url = request.base_url
    server = request.scope.get("server")
    host = request.headers.get("host", "")
    if server and host and ":" not in host.rpartition("]")[2] and "x-forwarded-host" not in request.headers:
        default = 443 if url.scheme == "https" else 80
        if server[1] != default:
            url = url.replace(port=server[1])
    return str(url).rstrip("/") + PREFIX


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, media_type=DICOM_JSON, headers=headers)


def _wants(request: Request, allowed: tuple[str, ...]) -> None:
    ranges = parse_accept(request.headers.get("accept"))
    if not any(r.media_type in allowed or r.media_type in ("*/*", "application/*") for r in ranges):
        raise HTTPError(406, f"this resource is {' or '.join(allowed)}")


Handler = Callable[[Front, Request, Principal], Awaitable[Response]]


def route(path: str, methods: tuple[str, ...] = ("GET",), action: str = "read") -> Callable[[Handler], Route]:
    """A route whose handler gets the front and the authenticated, authorized principal."""

    def wrap(handler: Handler) -> Route:
        async def endpoint(request: Request) -> Response:
            front: Front = request.app.state.front
            try:
                principal = await authenticate(front.engine, request.headers.get("authorization"))
                await authorize(front.engine, principal, action)
                return await handler(front, request, principal)
            except HTTPError as exc:
                return Response(exc.message + "\n", status_code=exc.status, media_type="text/plain", headers=exc.headers)

        return Route(PREFIX + path, endpoint, methods=list(methods))

    return wrap


# -- QIDO-RS -----------------------------------------------------------------------


def _search(level: str, scope_names: tuple[str, ...] = ()) -> Handler:
    async def handler(front: Front, request: Request, principal: Principal) -> Response:
        _wants(request, (DICOM_JSON, "application/json"))
        scope = {name: request.path_params[key] for key, name in zip(("study", "series"), scope_names)}
        body, headers = await qido.search(
            front.engine, principal, level, list(request.query_params.multi_items()), _base(request), scope
        )
        return _json(body, headers=headers) if body else Response(status_code=204, headers=headers)

    return handler


ROUTES = [
    route("/studies")(_search("STUDY")),
    route("/series")(_search("SERIES")),
    route("/instances")(_search("IMAGE")),
    route("/studies/{study}/series")(_search("SERIES", ("StudyInstanceUID",))),
    route("/studies/{study}/instances")(_search("IMAGE", ("StudyInstanceUID",))),
    route("/studies/{study}/series/{series}/instances")(_search("IMAGE", ("StudyInstanceUID", "SeriesInstanceUID"))),
]


# -- WADO-RS -----------------------------------------------------------------------


def _retrieve_syntax(request: Request) -> None:
    """406 unless the Accept header takes instances as stored."""
    for r in parse_accept(request.headers.get("accept")):
        if r.media_type in ("*/*", "application/dicom"):
            return
        if r.media_type == "multipart/related" and (r.part_type or "application/dicom") == "application/dicom":
            ts = r.params.get("transfer-syntax")
            if ts in (None, "*"):
                return
            request.state.wanted_ts = ts
            return
    raise HTTPError(406, 'instances are sent as multipart/related; type="application/dicom"')


async def retrieve(front: Front, request: Request, principal: Principal) -> Response:
    _retrieve_syntax(request)
    p = request.path_params
    items = await front.wado.instances(p["study"], p.get("series"), p.get("sop"))
    wanted = getattr(request.state, "wanted_ts", None)
    if wanted is not None:
        other = {i["tags"].get("TransferSyntaxUID") for i in items} - {wanted}
        if other:
            raise HTTPError(406, f"stored as {', '.join(sorted(filter(None, other)))}; ask for transfer-syntax=* or that syntax")
    boundary = new_boundary()
    return StreamingResponse(
        front.wado.stream_instances(items, principal, boundary),
        headers={"Content-Type": content_type(boundary, "application/dicom")},
    )


async def metadata(front: Front, request: Request, principal: Principal) -> Response:
    _wants(request, (DICOM_JSON, "application/json"))
    p = request.path_params
    items = await front.wado.instances(p["study"], p.get("series"), p.get("sop"))
    what = "/".join(filter(None, (p["study"], p.get("series"), p.get("sop"))))
    text = await front.wado.metadata(items, principal, _base(request), what)
    return Response(text, media_type=DICOM_JSON)


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise HTTPError(400, "frames are a comma separated list of numbers") from None
    if not numbers:
        raise HTTPError(400, "no frame asked for")
    return numbers


def _frames_as_stored(request: Request) -> bool:
    """Whether the Accept header takes compressed frames as stored, else uncompressed ones."""
    for r in parse_accept(request.headers.get("accept")):
        part = r.part_type if r.media_type == "multipart/related" else r.media_type
        ts = r.params.get("transfer-syntax")
        if ts == "*" or (part and part.startswith("image/")) or (ts and ts != EXPLICIT_LE):
            return True
    return False


async def _one_instance(front: Front, request: Request, principal: Principal) -> Any:
    p = request.path_params
    (item,) = (await front.wado.instances(p["study"], p["series"], p["sop"]))[:1]
    return await front.engine.run(front.wado.read_dataset, item, principal)


async def frames(front: Front, request: Request, principal: Principal) -> Response:
    numbers = _frame_numbers(request.path_params["frames"])
    as_stored = _frames_as_stored(request)
    ds = await _one_instance(front, request, principal)
    data, media, ts = await trio.to_thread.run_sync(frames_of, ds, numbers, as_stored)
    boundary = new_boundary()
    base_url = str(request.url).split("?")[0]

    async def body() -> Any:
        for n, frame in zip(numbers, data):
            yield part_header(boundary, f"{media}; transfer-syntax={ts}", f"{base_url.rsplit('/', 1)[0]}/{n}") + frame + b"\r\n"
        yield closing(boundary)

    return StreamingResponse(body(), headers={"Content-Type": content_type(boundary, media, ts)})


async def bulkdata(front: Front, request: Request, principal: Principal) -> Response:
    ds = await _one_instance(front, request, principal)
    value = await trio.to_thread.run_sync(bulk_value, ds, request.path_params["tag"])
    boundary = new_boundary()
    body = part_header(boundary, "application/octet-stream") + value + b"\r\n" + closing(boundary)
    return Response(body, headers={"Content-Type": content_type(boundary, "application/octet-stream")})


async def rendered(front: Front, request: Request, principal: Principal) -> Response:
    media = None
    for r in parse_accept(request.headers.get("accept")):
        if r.media_type in rendering.MEDIA_TYPES:
            media = r.media_type
            break
        if r.media_type in ("*/*", "image/*"):
            media = "image/jpeg"
            break
    if media is None:
        raise HTTPError(406, "rendered frames are image/jpeg or image/png")
    frame = int(request.path_params.get("frame", 1))
    window = rendering.parse_window(request.query_params.get("window"))
    viewport = rendering.parse_viewport(request.query_params.get("viewport"))
    ds = await _one_instance(front, request, principal)
    quality = request.query_params.get("quality", "90")
    if not quality.isdigit() or not 1 <= int(quality) <= 100:
        raise HTTPError(400, "quality is 1 to 100")
    image = await trio.to_thread.run_sync(functools.partial(rendering.render, ds, frame, media, window, viewport, int(quality)))
    return Response(image, media_type=media)


_STUDY, _SERIES, _INSTANCE = (
    "/studies/{study}",
    "/studies/{study}/series/{series}",
    "/studies/{study}/series/{series}/instances/{sop}",
)
ROUTES += [
    route(_STUDY)(retrieve),
    route(_SERIES)(retrieve),
    route(_INSTANCE)(retrieve),
    route(_STUDY + "/metadata")(metadata),
    route(_SERIES + "/metadata")(metadata),
    route(_INSTANCE + "/metadata")(metadata),
    route(_INSTANCE + "/frames/{frames}")(frames),
    route(_INSTANCE + "/bulkdata/{tag}")(bulkdata),
    route(_INSTANCE + "/rendered")(rendered),
    route(_INSTANCE + "/frames/{frame:int}/rendered")(rendered),
]


# -- STOW-RS -----------------------------------------------------------------------


async def store_instances(front: Front, request: Request, principal: Principal) -> Response:
    status, answer = await receive(front.stow, request, request.path_params.get("study"), principal, _base(request))
    return _json(answer, status=status)


ROUTES += [
    route("/studies", ("POST",), action="write")(store_instances),
    route(_STUDY, ("POST",), action="write")(store_instances),
]


def create_app(store: Store, bucket: str | None = None, cors_origins: tuple[str, ...] | list[str] = ()) -> Starlette:
    """The DICOMweb app over ``store`` serving ``bucket`` (default: the gateway's [dicom] bucket)."""
    middleware = []
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Accept", "Content-Type"],
                expose_headers=["Content-Type", "Content-Location", "Warning"],
                max_age=600,
            )
        )
    app = Starlette(routes=ROUTES, middleware=middleware)
    app.state.front = Front(store, bucket or store.config.dicom.bucket)
    return app


async def serve_dicomweb(
    store: Store,
    host: str = "127.0.0.1",
    port: int = 8042,
    *,
    bucket: str | None = None,
    cors_origins: tuple[str, ...] | list[str] = (),
    shutdown_trigger: Callable[..., Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve DICOMweb for ``store`` until cancelled or ``shutdown_trigger`` returns.

    ``task_status.started`` receives the bound addresses once the socket listens.
    """
    await serve_asgi(
        create_app(store, bucket, cors_origins), host, port, shutdown_trigger=shutdown_trigger, task_status=task_status
    )
