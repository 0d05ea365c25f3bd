"""The DICOM gateway: a pynetdicom AE serving Verification, Storage and Q/R.

``serve_dicom`` runs it (blocking, thread-friendly) for ``objfs dicom`` and
``objfs serve``. Every association socket gets TCP_NODELAY: DIMSE is
request/response with small PDUs at the end of each message, and Nagle's
algorithm with delayed ACKs turns each of them into a ~40 ms stall (a
300-slice study takes ~15 s instead of well under a second).
"""

from __future__ import annotations

import logging
import socket
import threading
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

from .flow import install_send_backpressure
from .qr import QueryRetrieve
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


def build_ae(
    store: Store,
    *,
    aet: str,
    bucket: str,
    allowed_aets: tuple[str, ...] | list[str] = (),
    duplicates: str = "keep",
    destinations: dict[str, tuple[str, int]] | None = None,
) -> tuple[AE, list[tuple[Any, Any]]]:
    """The configured AE and the event handlers to start its server with.

    Creates ``bucket`` if it does not exist.
    """
    try:
        store.create_bucket(bucket, principal=GATEWAY)
    except BucketAlreadyExists:
        pass
    # Bounded memory whatever the instance size: received datasets are
    # spooled to the store's disk as they arrive (and removed whatever
    # becomes of their association), sent ones are read from disk no faster
    # than the socket drains.
    install_receive_spool(store)
    install_send_backpressure()
    ae = AE(ae_title=aet)
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
    qr = QueryRetrieve(store, bucket, aet, destinations or {}, nodelay)
    handlers = [
        *nodelay,
        (evt.EVT_C_STORE, StoreHandler(store, bucket, duplicates)),
        (evt.EVT_C_FIND, qr.on_find),
        (evt.EVT_C_MOVE, qr.on_move),
        (evt.EVT_C_GET, qr.on_get),
    ]
    return ae, handlers


def serve_dicom(
    store: Store,
    *,
    port: int | None = None,
    aet: str | None = None,
    bucket: str | None = None,
    host: str = "",
    ready_event: threading.Event | None = None,
    stop_event: threading.Event | None = None,
) -> None:
    """Run the gateway until ``stop_event`` is set (forever without one).

    Unset arguments come from ``store.config.dicom`` (objfs.toml), as do
    the calling-AE allowlist, C-MOVE destinations and duplicate policy.
    ``ready_event`` is set once the port accepts associations. On return
    the listening socket is closed and running associations have ended.
    """
    cfg = store.config.dicom
    ae, handlers = build_ae(
        store,
        aet=aet or cfg.aet,
        bucket=bucket or cfg.bucket,
        allowed_aets=cfg.allowed_aets,
        duplicates=cfg.duplicates,
        destinations=cfg.destinations,
    )
    server = ae.start_server((host, cfg.port if port is None else port), block=False, evt_handlers=handlers)
    log.info(
        "DICOM gateway %s listening on %s:%d (bucket %s)",
        ae.ae_title,
        host or "*",
        server.server_address[1],
        bucket or cfg.bucket,
    )
    try:
        if ready_event is not None:
            ready_event.set()
        (stop_event or threading.Event()).wait()
    finally:
        server.shutdown()
        ae.shutdown()
