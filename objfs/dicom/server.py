"""The DICOM gateway: a pynetdicom AE serving Verification, Storage and Q/R.

``serve_dicom`` runs it (blocking, thread-friendly) for ``objfs dicom`` and
``objfs serve``. One port serves several AE titles, each with its bucket
(``[dicom] aet``/``bucket`` and ``[dicom.aets]``); an association to any
other called AE title is rejected (called-AE-title-not-recognized), as
Orthanc and dcm4chee do. With ``tls_certfile``/``tls_keyfile`` the port
speaks DICOM TLS (PS3.15 B.1, TLS 1.2 or later), checking peer certificates
against ``tls_ca_file`` when set. Every association socket gets TCP_NODELAY: DIMSE is
request/response with small PDUs at the end of each message, and Nagle's
algorithm with delayed ACKs turns each of them into a ~40 ms stall (a
300-slice study takes ~15 s instead of well under a second).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from objfs.store import Store
from objfs.store.errors import BucketAlreadyExists

from .commandset import install_direct_command_sets
from .direct import install_direct_send
from .flow import install_send_backpressure
from .processes import Dispatcher, HandedServer, count_closes, listen, process_count, spawn_worker
from .qr import QueryRetrieve
from .reactor import install_event_driven_reactors
from .recv import install_large_reads
from .sessions import AssociationLog
from .spool import install_receive_spool
from .storage import GATEWAY, StoreHandler

log = logging.getLogger(__name__)

MAX_PDU = 1 << 20  # fewer, larger PDUs: pynetdicom's per-PDU cost is Python code
MAX_ASSOCIATIONS = 32
# pynetdicom accepts, per proposed context, the first syntax of *this* list
# that the requestor offers. Explicit VR LE first: a sender offering its
# native file's syntax among others gets it back unchanged (with implicit
# first, dcmtk's storescu would convert every explicit-VR file on the fly).
# Compressed syntaxes next, so compressed data is kept as compressed; the
# other uncompressed ones last.
_LAST = [DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian]
TRANSFER_SYNTAXES = (
    [ExplicitVRLittleEndian] + [ts for ts in ALL_TRANSFER_SYNTAXES if ts not in (ExplicitVRLittleEndian, *_LAST)] + _LAST
)
_QR_MODELS = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
)


def set_nodelay(event: Any) -> None:
    """EVT_CONN_OPEN handler: disable Nagle's algorithm on the association socket."""
    try:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError) as exc:  # a socket closed already has nothing to tune
        log.debug("TCP_NODELAY not set: %s", exc)


class SharedContexts(list):
    """The supported presentation contexts, shared by every association of a server.

    pynetdicom deep-copies the server's context list into each new
    association (170 contexts x 45 transfer syntaxes: ~54 ms per association,
    most of its set-up time), although negotiation (``negotiate_as_acceptor``)
    only reads it and builds new contexts for the result. The list is built
    once and never changed while the server runs, so each association gets a
    shallow copy of it.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return list(self)


def install_called_aet_patch() -> None:
    """Let one listening AE answer to several called AE titles.

    pynetdicom compares the called AE title with the server's one title
    (``require_called_aet``); before that check, an association calling one
    of the AE's ``objfs_aets`` gets that title as its acceptor title, so it
    passes (and the A-ASSOCIATE-AC names it), while any other title is
    rejected. Handlers pick the bucket from ``assoc.acceptor.ae_title``. Idempotent.
    """
    from pynetdicom.acse import ACSE

    if getattr(ACSE._negotiate_as_acceptor, "_objfs", False):
        return
    original = ACSE._negotiate_as_acceptor

    def negotiate(self: Any) -> None:
        titles = getattr(self.assoc.ae, "objfs_aets", None)
        if titles:
            called = str(self.requestor.primitive.called_ae_title).strip()
            if called in titles:
                self.acceptor.ae_title = called
        return original(self)

    negotiate._objfs = True  # type: ignore[attr-defined]
    ACSE._negotiate_as_acceptor = negotiate  # type: ignore[method-assign]


def _by_called_aet(handlers: dict[str, Any]) -> Any:
    """An event handler passing each event to the handler of the association's called AE title."""

    def dispatch(event: Any) -> Any:
        return handlers[str(event.assoc.acceptor.ae_title).strip()](event)

    return dispatch


def tls_context(certfile: str, keyfile: str, ca_file: str | None = None) -> ssl.SSLContext:
    """The server side of DICOM TLS: TLS 1.2+, peer certificates required when ``ca_file`` is given."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    context.verify_mode = ssl.CERT_REQUIRED if ca_file else ssl.CERT_NONE
    return context


class GatewayAE(AE):
    """An AE whose calling-AE allowlist can be read afresh for every association.

    With ``allowlist`` set (``serve_dicom`` sets it to the store's
    ``[dicom] allowed_aets``), pynetdicom's check of each new association
    asks it, so a reload of objfs.toml (SIGHUP under ``objfs serve``)
    changes who may associate without restarting the listener.
    """

    allowlist: Callable[[], list[str]] | None = None

    @property  # type: ignore[override]
    def require_calling_aet(self) -> list[str]:
        if self.allowlist is not None:
            return self.allowlist()
        return AE.require_calling_aet.fget(self)  # type: ignore[attr-defined]

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        AE.require_calling_aet.fset(self, ae_titles)  # type: ignore[attr-defined]


def build_ae(
    store: Store,
    *,
    aet: str,
    bucket: str,
    allowed_aets: tuple[str, ...] | list[str] = (),
    duplicates: str = "keep",
    destinations: dict[str, tuple[str, int]] | None = None,
    aets: dict[str, str] | None = None,
    create_buckets: bool = True,
) -> tuple[AE, list[tuple[Any, Any]]]:
    """The configured AE and the event handlers to start its server with.

    ``aet`` serves ``bucket``; ``aets`` maps further AE titles to their
    buckets. Creates the buckets that do not exist (an invalid name raises
    InvalidBucketName before anything listens) unless ``create_buckets`` is
    false (a worker process: the process that started it created them).
    """
    titles = {aet.strip(): bucket, **{t.strip(): b for t, b in (aets or {}).items()}}
    for name in dict.fromkeys(titles.values()) if create_buckets else ():
        try:
            store.create_bucket(name, principal=GATEWAY)
        except BucketAlreadyExists:
            pass
    # Bounded memory whatever the instance size: received datasets are
    # spooled to the store's disk as they arrive (and removed whatever
    # becomes of their association), sent ones are read from disk no faster
    # than the socket drains.
    install_receive_spool(store)
    install_send_backpressure()
    install_event_driven_reactors()
    install_direct_send()
    install_large_reads()
    install_direct_command_sets()
    install_called_aet_patch()
    ae = GatewayAE(ae_title=aet)
    ae.require_called_aet = True
    ae.objfs_aets = frozenset(titles)  # type: ignore[attr-defined]
    ae.maximum_pdu_size = MAX_PDU
    ae.maximum_associations = MAX_ASSOCIATIONS
    ae.network_timeout = 60
    ae.dimse_timeout = 120
    ae.acse_timeout = 30
    if allowed_aets:
        ae.require_calling_aet = [a.strip() for a in allowed_aets]
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        # scu_role/scp_role let a C-GET requestor take the Storage SCP role
        # on the same association; plain C-STORE senders propose no roles.
        ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    for model in _QR_MODELS:
        ae.add_supported_context(model)
    nodelay = [(evt.EVT_CONN_OPEN, set_nodelay)]
    stores = {t: StoreHandler(store, b, duplicates) for t, b in titles.items()}
    qrs = {t: QueryRetrieve(store, b, t, destinations or {}, nodelay) for t, b in titles.items()}
    sessions = AssociationLog()  # one summary line per association, with the peer's address
    handlers = [
        *nodelay,
        *sessions.handlers(),
        (evt.EVT_C_STORE, sessions.counting_store(_by_called_aet(stores))),
        (evt.EVT_C_FIND, sessions.counting_find(_by_called_aet({t: qr.on_find for t, qr in qrs.items()}))),
        (evt.EVT_C_MOVE, sessions.counting_retrieve(_by_called_aet({t: qr.on_move for t, qr in qrs.items()}))),
        (evt.EVT_C_GET, sessions.counting_retrieve(_by_called_aet({t: qr.on_get for t, qr in qrs.items()}))),
    ]
    return ae, handlers


def _configured_ae(
    store: Store, aet: str | None, bucket: str | None, create_buckets: bool = True
) -> tuple[AE, list[tuple[Any, Any]], ssl.SSLContext | None]:
    """The AE, handlers and TLS context of ``store``'s objfs.toml (``aet``/``bucket`` override it)."""
    cfg = store.config.dicom
    ae, handlers = build_ae(
        store,
        aet=aet or cfg.aet,
        bucket=bucket or cfg.bucket,
        allowed_aets=cfg.allowed_aets,
        duplicates=cfg.duplicates,
        destinations=cfg.destinations,
        aets=cfg.aets,
        create_buckets=create_buckets,
    )
    # The allowlist as objfs.toml says now: a reload (objfs.serve.reload_config) replaces store.config.
    ae.allowlist = lambda: [a.strip() for a in store.config.dicom.allowed_aets]  # type: ignore[attr-defined]
    context = tls_context(cfg.tls_certfile, cfg.tls_keyfile, cfg.tls_ca_file) if cfg.tls_certfile and cfg.tls_keyfile else None
    return ae, handlers, context


def build_server(
    store: Store,
    *,
    aet: str | None = None,
    bucket: str | None = None,
    on_closed: Callable[[], None] | None = None,
    create_buckets: bool = True,
) -> tuple[AE, HandedServer]:
    """The configured AE and a server of it that serves connections handed to it (no listening socket).

    The server's ``on_closed`` (``on_closed`` if given; settable later) is
    called once per connection when it closes.
    """
    ae, handlers, context = _configured_ae(store, aet, bucket, create_buckets)
    made: list[HandedServer] = []
    handlers.append(count_closes(lambda: made[0].on_closed()))  # looked up when a connection closes
    server = ae.make_server(
        ("", 0),
        evt_handlers=handlers,
        ssl_context=context,
        contexts=SharedContexts(ae.supported_contexts),
        server_class=HandedServer,
    )
    made.append(server)
    if on_closed is not None:
        server.on_closed = on_closed
    ae._servers.append(server)
    return ae, server


def serve_dicom(
    store: Store,
    *,
    port: int | None = None,
    aet: str | None = None,
    bucket: str | None = None,
    host: str = "",
    ready_event: threading.Event | None = None,
    stop_event: threading.Event | None = None,
    processes: int | None = None,
    log_style: str = "journal",
    verbose: bool = False,
) -> None:
    """Run the gateway until ``stop_event`` is set (forever without one).

    Unset arguments come from ``store.config.dicom`` (objfs.toml), as do
    the calling-AE allowlist, C-MOVE destinations, duplicate policy and the
    number of gateway processes (``processes``; :mod:`.processes`).
    ``ready_event`` is set once the port accepts associations. On return
    the listening socket is closed and running associations have ended
    (worker processes too). ``log_style`` (``journal`` or ``cli``) and
    ``verbose`` tell worker processes how to log, as this process does.
    Raises :class:`~.processes.GatewayProcessDied` if a worker process ends
    while the gateway serves.
    """
    cfg = store.config.dicom
    count = process_count(cfg.processes if processes is None else processes)
    port = cfg.port if port is None else port
    stop_event = stop_event or threading.Event()
    if count == 1:
        _serve_one_process(store, port=port, aet=aet, bucket=bucket, host=host, ready_event=ready_event, stop_event=stop_event)
        return
    listener = listen(host, port)
    workers: list[Any] = []
    dispatcher = ae = local = None
    try:
        ae, local = build_server(store, aet=aet, bucket=bucket)
        argv = [*(["--aet", aet] if aet else []), *(["--bucket", bucket] if bucket else []), "--log", log_style]
        argv += ["--verbose"] if verbose else []
        for number in range(1, count):
            workers.append(spawn_worker(number, store.root, argv))
        dispatcher = Dispatcher(listener, local, workers, ae.allowlist)  # type: ignore[attr-defined]
        dispatcher.wait_ready(stop_event)
        log.info(
            "DICOM gateway %s listening on %s:%d (bucket %s%s, %d processes)",
            ae.ae_title,
            host or "*",
            listener.getsockname()[1],
            bucket or cfg.bucket,
            ", TLS" if local.ssl_context else "",
            count,
        )
        if ready_event is not None:
            ready_event.set()
        dispatcher.run(stop_event)
    finally:
        listener.close()  # no new connection from here on
        if dispatcher is not None:
            dispatcher.stop_workers()
        for worker in workers:  # started before the dispatcher could take them over
            if worker.proc.poll() is None and dispatcher is None:
                worker.proc.kill()
                worker.proc.wait()
        if local is not None:
            local.shutdown()
            ae.shutdown()


def _serve_one_process(
    store: Store,
    *,
    port: int,
    aet: str | None,
    bucket: str | None,
    host: str,
    ready_event: threading.Event | None,
    stop_event: threading.Event,
) -> None:
    """The gateway in this process only: pynetdicom's own listener."""
    cfg = store.config.dicom
    ae, handlers, context = _configured_ae(store, aet, bucket)
    server = ae.start_server(
        (host, port),
        block=False,
        evt_handlers=handlers,
        ssl_context=context,
        contexts=SharedContexts(ae.supported_contexts),
    )
    log.info(
        "DICOM gateway %s listening on %s:%d (bucket %s%s)",
        ae.ae_title,
        host or "*",
        server.server_address[1],
        bucket or cfg.bucket,
        ", TLS" if context else "",
    )
    try:
        if ready_event is not None:
            ready_event.set()
        stop_event.wait()
    finally:
        server.shutdown()
        ae.shutdown()
