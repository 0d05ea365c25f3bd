"""Query/Retrieve SCP: C-FIND, C-MOVE and C-GET over the DICOM index.

Patient Root and Study Root information models, PATIENT/STUDY/SERIES/IMAGE
levels (Study Root refuses PATIENT with 0xA900). Matching is PS3.4
C.2.2.2 (:mod:`objfs.dicom.matching`); lookups go through
:func:`objfs.dicom.index.find` / :func:`~objfs.dicom.index.find_instances`.

Retrieval is bit-exact: pynetdicom would re-encode a yielded ``Dataset``
(and deflate would differ), so each instance is streamed from the engine to
a spool file and sent from that file unchanged
(``STORE_SEND_CHUNKED_DATASET``; see :func:`install_send_patch`). Files are
prepared a few instances ahead in a thread, so decoding overlaps sending;
memory stays bounded by the engine's segment size whatever the instance size
(and, on the socket side, by :mod:`objfs.dicom.flow`).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from objfs.store import Principal, Store
from objfs.store.errors import StoreError

from .direct import install_direct_send
from .index import find, find_instances
from .matching import LEVEL_KEYS, build_response, query_from_dataset, unmatchable_keys
from .storage import file_meta_bytes, peer_principal

__all__ = ["QueryRetrieve", "StoredInstance", "install_send_patch"]

log = logging.getLogger(__name__)

PREFETCH = 3  # instances prepared ahead of the one being sent
#: A retrieved instance up to this size is prepared in memory (at most PREFETCH + 2 of them per retrieval).
MEMORY_MAX = 2 << 20
MOVE_PROBE_SECONDS = 5.0
_STUDY_ROOT = {
    str(StudyRootQueryRetrieveInformationModelFind),
    str(StudyRootQueryRetrieveInformationModelMove),
    str(StudyRootQueryRetrieveInformationModelGet),
}
_MAX_CONTEXTS = 128


class StoredInstance(Dataset):
    """A placeholder yielded to pynetdicom: sent from ``objfs_path`` as stored.

    ``memory_fd``: the path names this process' open memory file (``memfd``), closed by :func:`_unlink`.
    """

    def __init__(self, path: Path, sop_class: str, sop_instance: str, memory_fd: int | None = None) -> None:
        super().__init__()
        self.SOPClassUID = sop_class
        self.SOPInstanceUID = sop_instance
        self._objfs_path = path
        self._objfs_memory_fd = memory_fd


def install_send_patch() -> None:
    """Make ``Association.send_c_store`` send a :class:`StoredInstance` from its file.

    pynetdicom's Move/Get service classes only accept ``Dataset`` yields and
    re-encode them; passing the file path instead (with
    ``STORE_SEND_CHUNKED_DATASET``) sends the stored bytes unchanged. Other
    datasets are passed through untouched. Idempotent.
    """
    from pynetdicom import _config

    _config.STORE_SEND_CHUNKED_DATASET = True
    if getattr(Association.send_c_store, "_objfs", False):
        return
    original = Association.send_c_store

    @functools.wraps(original)
    def send_c_store(self: Association, dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if not isinstance(dataset, StoredInstance):
            return original(self, dataset, *args, **kwargs)
        try:
            return original(self, dataset._objfs_path, *args, **kwargs)
        except ValueError:
            # The peer accepted no context with the stored transfer syntax.
            # pynetdicom converts between the uncompressed ones when given a
            # decoded dataset: content-equal, not bit-exact, and only then.
            return original(self, dcmread(dataset._objfs_path), *args, **kwargs)

    send_c_store._objfs = True  # type: ignore[attr-defined]
    Association.send_c_store = send_c_store  # type: ignore[method-assign]


def _level(identifier: Dataset, model: str) -> str | None:
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVEL_KEYS:
        return None
    if level == "PATIENT" and model in _STUDY_ROOT:
        return None
    return level


class QueryRetrieve:
    """C-FIND/C-MOVE/C-GET handlers bound to one store and bucket."""

    def __init__(
        self, store: Store, bucket: str, aet: str, destinations: dict[str, tuple[str, int]], conn_handlers: list
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.aet = aet
        self.destinations = {k.strip(): v for k, v in destinations.items()}
        self.conn_handlers = conn_handlers
        self.spool = store.spool_area("dicom-send")
        install_send_patch()
        install_direct_send()  # first: the move failure patch must wrap it, to see every message
        install_move_failure_patch()

    # -- C-FIND ---------------------------------------------------------------------

    def on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        identifier = event.identifier
        level = _level(identifier, str(event.request.AffectedSOPClassUID))
        if level is None:
            yield 0xA900, None
            return
        unmatchable = unmatchable_keys(identifier)
        if unmatchable:
            # Ignoring the key would match every record: refuse, naming it.
            refusal = Dataset()
            refusal.Status = 0xA900
            refusal.ErrorComment = f"cannot match on {', '.join(unmatchable)}"[:64]
            log.info("C-FIND refused: no matching on %s", unmatchable)
            yield refusal, None
            return
        query = query_from_dataset(identifier)
        try:
            entries = find(self.store, query, level, bucket=self.bucket)
        except StoreError as exc:
            log.error("C-FIND failed: %s", exc)
            yield 0xA700, None
            return
        for entry in entries:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            entry.setdefault("RetrieveAETitle", self.aet)
            entry.setdefault("InstanceAvailability", "ONLINE")
            yield 0xFF00, build_response(identifier, entry, level)

    # -- C-MOVE / C-GET ------------------------------------------------------------

    def _matches(self, event: Any) -> list[dict[str, Any]] | None:
        identifier = event.identifier
        level = _level(identifier, str(event.request.AffectedSOPClassUID))
        if level is None:
            return None
        return find_instances(self.store, query_from_dataset(identifier), level, bucket=self.bucket)

    def on_move(self, event: Any) -> Iterator[Any]:
        destination = self.destinations.get(str(event.move_destination).strip())
        if destination is None:
            log.info("C-MOVE to unknown destination %r refused", event.move_destination)
            yield None, None
            return
        instances = self._matches(event)
        if instances is None:  # pynetdicom wants the destination and a count before any status
            yield destination[0], destination[1], {"evt_handlers": self.conn_handlers}
            yield 1
            yield 0xA900, None
            return
        contexts = _move_contexts(instances)
        name = str(event.move_destination).strip()
        reason = _unreachable(destination)
        # Should the sub-association fail, the answer names the reason (see install_move_failure_patch).
        event.assoc._objfs_move = {
            "instances": [i["tags"]["SOPInstanceUID"] for i in instances],
            "reason": f"move destination {name} at {destination[0]}:{destination[1]}: {reason or 'association refused'}",
        }
        if reason:
            log.warning("C-MOVE destination %s at %s:%d unreachable: %s", name, destination[0], destination[1], reason)
        yield destination[0], destination[1], {"contexts": contexts or None, "evt_handlers": self.conn_handlers}
        yield len(instances)
        yield from self._send(event, instances)

    def on_get(self, event: Any) -> Iterator[Any]:
        instances = self._matches(event)
        if instances is None:  # a count comes before any status
            yield 1
            yield 0xA900, None
            return
        yield len(instances)
        yield from self._send(event, instances)

    def _send(self, event: Any, instances: list[dict[str, Any]]) -> Iterator[tuple[int, Dataset | None]]:
        principal = peer_principal(event.assoc)  # reads are audited as the retrieving AE
        prepare = functools.partial(self._prepare, principal=principal)
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="objfs-dicom-prep")
        pending: list[Future[StoredInstance | None]] = []
        sent: StoredInstance | None = None
        try:
            todo = iter(instances)
            for item in todo:
                pending.append(pool.submit(prepare, item))
                if len(pending) > PREFETCH:
                    break
            while pending:
                prepared = pending.pop(0).result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(prepare, nxt))
                _unlink(sent)
                sent = None
                if event.is_cancelled:
                    yield 0xFE00, None
                    return
                if prepared is None:  # unreadable: counted as a failed sub-operation
                    yield 0xFF00, Dataset()
                    continue
                sent = prepared
                yield 0xFF00, prepared
        finally:
            _unlink(sent)
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True)
            for fut in pending:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    _unlink(fut.result())

    def _prepare(self, item: dict[str, Any], *, principal: Principal) -> StoredInstance | None:
        """Stream one object to a file of ours; a meta header is added only to raw datasets.

        An instance of at most :data:`MEMORY_MAX` bytes goes to a memory file
        (``memfd``, named by its ``/proc/self/fd`` path, which pynetdicom opens
        like any file): no spool file is created, written, read back and
        unlinked on the store's disk for each instance of a study. Larger ones
        go to the store's spool area, so memory stays bounded.
        """
        tags = item["tags"]
        memory_fd = None
        if int(item.get("size") or MEMORY_MAX + 1) <= MEMORY_MAX:
            memory_fd = os.memfd_create("objfs-dicom-send", os.MFD_CLOEXEC)
            fd, path = os.dup(memory_fd), Path(f"/proc/self/fd/{memory_fd}")
        else:
            fd, name = tempfile.mkstemp(suffix=".dcm", prefix=self.store.spool_prefix(), dir=self.spool)
            path = Path(name)
        instance = StoredInstance(path, tags["SOPClassUID"], tags["SOPInstanceUID"], memory_fd)
        try:
            with (
                os.fdopen(fd, "wb") as out,
                self.store.open_object(item["bucket"], item["key"], item["version"], principal=principal) as reader,
            ):
                chunks = reader.iter_range()
                first = next(chunks, b"")
                if first[128:132] != b"DICM":
                    out.write(file_meta_bytes(tags["SOPClassUID"], tags["SOPInstanceUID"], tags["TransferSyntaxUID"]))
                out.write(first)
                for chunk in chunks:
                    out.write(chunk)
            return instance
        except (StoreError, OSError, KeyError) as exc:
            log.error("cannot read %s/%s for retrieval: %s", item["bucket"], item["key"], exc)
            _unlink(instance)
            return None


def _unreachable(destination: tuple[str, int]) -> str | None:
    """Why a TCP connection to a C-MOVE destination fails, or None if it opens."""
    try:
        with socket.create_connection(destination, timeout=MOVE_PROBE_SECONDS):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def install_move_failure_patch() -> None:
    """Answer a C-MOVE whose configured destination cannot be associated with as failed
    sub-operations (0xA702, every instance counted failed, the reason in ErrorComment
    and the instances in FailedSOPInstanceUIDList) instead of pynetdicom's 0xA801
    "Move Destination Unknown", which would send the administrator to the wrong
    setting. An unconfigured destination still gets 0xA801. Idempotent."""
    from pynetdicom.dimse import DIMSEServiceProvider
    from pynetdicom.dimse_primitives import C_MOVE

    if getattr(DIMSEServiceProvider.send_msg, "_objfs", False):
        return
    original = DIMSEServiceProvider.send_msg

    @functools.wraps(original)
    def send_msg(self: Any, primitive: Any, context_id: int) -> None:
        move = getattr(self.assoc, "_objfs_move", None)
        if move is not None and isinstance(primitive, C_MOVE) and primitive.Status == 0xA801:
            primitive.Status = 0xA702
            primitive.ErrorComment = move["reason"][:64]
            primitive.NumberOfRemainingSuboperations = 0
            primitive.NumberOfCompletedSuboperations = 0
            primitive.NumberOfWarningSuboperations = 0
            primitive.NumberOfFailedSuboperations = len(move["instances"])
            failed = Dataset()
            failed.FailedSOPInstanceUIDList = move["instances"]
            primitive.Identifier = _encode(failed, self.assoc, context_id)
        return original(self, primitive, context_id)

    send_msg._objfs = True  # type: ignore[attr-defined]
    DIMSEServiceProvider.send_msg = send_msg  # type: ignore[method-assign]


def _encode(ds: Dataset, assoc: Any, context_id: int) -> Any:
    from io import BytesIO

    from pynetdicom.dsutils import encode

    ts = assoc._accepted_cx[context_id].transfer_syntax[0]
    return BytesIO(encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated))


def _move_contexts(instances: list[dict[str, Any]]) -> list[Any]:
    """Contexts for a C-MOVE sub-association: each SOP class with each stored
    transfer syntax (sent unchanged), plus one uncompressed fallback context
    per SOP class, at most 128 in all."""
    exact: dict[tuple[str, str], None] = {}
    classes: dict[str, None] = {}
    for item in instances:
        sop_class, ts = item["tags"].get("SOPClassUID"), item["tags"].get("TransferSyntaxUID")
        if sop_class and ts:
            exact[(sop_class, ts)] = None
            classes[sop_class] = None
    contexts = [build_context(sc, [ts]) for sc, ts in exact]
    contexts += [build_context(sc, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) for sc in classes]
    return contexts[:_MAX_CONTEXTS]


def _unlink(instance: StoredInstance | None) -> None:
    """Free a prepared instance's file: close its memory file, or remove its spool file."""
    if instance is None:
        return
    if instance._objfs_memory_fd is not None:
        os.close(instance._objfs_memory_fd)
        instance._objfs_memory_fd = None
    else:
        Path(instance._objfs_path).unlink(missing_ok=True)
