"""The C-STORE receive spool: in memory for ordinary instances, else owned by this process; emptied by every association that ends.

With ``STORE_RECV_CHUNKED_DATASET`` pynetdicom writes each incoming C-STORE
dataset, P-DATA by P-DATA, into a ``NamedTemporaryFile(delete=False)`` and
unlinks it only after the ``EVT_C_STORE`` handler ran. A dataset whose
association ends first (A-ABORT, A-RELEASE mid-transfer, a TCP reset, a
peer killed mid-P-DATA, a network timeout) is never handed to a handler,
and pynetdicom leaves its file behind for good. Guarantees, once
:func:`install_receive_spool` ran:

* A dataset received by the gateway is held in memory up to
  :data:`MEMORY_MAX` bytes (a CT or MR slice: no file is created, written,
  read back and unlinked per instance); from its first byte beyond that it
  goes to a spool file, so memory per association stays bounded (the
  handler reads at most ``HEAD_BYTES`` of it into memory as before).
  Datasets received by other pynetdicom associations of the process (a test's
  or tool's SCU) go to a file from the first byte, as pynetdicom's would.
* Receive spool files are created in the store's ``dicom-recv`` spool area
  (on the store's disk, not a possibly small ``/tmp``), named with the
  store's owner prefix, so if this process dies (SIGKILL, power loss) the
  engine's spool sweep removes them the next time the store is opened.
* When an association's reactor ends, for whatever reason, every receive
  spool file that association created and that still exists is closed and
  removed: the partial dataset being received and complete ones that were
  never served. Nothing of it was stored: an object is only ever made by
  the handler, from a complete file.
* Files are tracked per association by the DUL thread that creates them,
  and removed by the association's own thread after the DUL thread has
  stopped, so a dataset still being handled is never removed under its
  handler.
* A spool file's File Meta Information is encoded directly
  (:func:`~.meta.file_meta_bytes`), not through a pydicom
  ``FileMetaDataset`` and ``write_file_meta_info``: the same bytes (pynetdicom's
  implementation UID and version, the accepted transfer syntax), at a
  fraction of the CPU the DUL thread spent on them for every instance.

The patches are process-wide (as pynetdicom's own configuration is) and
idempotent; the spool area is that of the last store installed, so a
process serves DICOM from one store.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import secrets
import threading
from typing import IO, Any, BinaryIO, NamedTuple

from pydicom.filewriter import write_file_meta_info
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, _config, dimse_messages
from pynetdicom.association import Association

from objfs.store import Store

from .meta import file_meta_bytes

__all__ = ["MEMORY_MAX", "RECEIVE_SPOOL", "ReceiveBuffer", "install_receive_spool"]

log = logging.getLogger(__name__)

RECEIVE_SPOOL = "dicom-recv"  # the store's spool area for received datasets
DUL_STOP_WAIT = 2.0  # seconds an ended association waits for its DUL thread to stop, twice at most
_TRACKED = "_objfs_spool_files"  # attribute of an Association: its receive spool files
#: A received dataset up to this size stays in memory (the gateway's own associations only).
MEMORY_MAX = 2 << 20


class ReceiveBuffer:
    """Where pynetdicom writes a received C-STORE dataset (its ``NamedTemporaryFile``, as a file-like object).

    Bytes stay in memory until more than ``memory_max`` have come; then they,
    and all that follow, go to a file at :attr:`name` in the spool area
    (created with ``O_EXCL``, named with the store's owner prefix).
    :meth:`reader` gives the complete dataset back to the handler.
    """

    def __init__(self, area: str, prefix: str, memory_max: int, suffix: str = ".dcm") -> None:
        self._area, self._prefix, self._suffix = area, prefix, suffix
        self.name = self._new_name()
        self.memory_max = memory_max
        self.closed = False
        self._chunks: list[bytes] = []
        self._size = 0
        self._file: IO[bytes] | None = None
        if memory_max <= 0:
            self._spill()

    def _new_name(self) -> str:
        return os.path.join(self._area, f"{self._prefix}{secrets.token_hex(6)}{self._suffix}")

    @property
    def file(self) -> ReceiveBuffer:
        """pynetdicom flushes ``file.flush()`` after each write, as for a NamedTemporaryFile."""
        return self

    @property
    def in_memory(self) -> bool:
        return self._file is None

    def write(self, data: bytes) -> int:
        if self._file is None:
            if self._size + len(data) <= self.memory_max:
                self._chunks.append(bytes(data))
                self._size += len(data)
                return len(data)
            self._spill()
        assert self._file is not None
        self._size += len(data)
        return self._file.write(data)

    @property
    def size(self) -> int:
        """Bytes received (written) so far, in memory or in the file."""
        return self._size

    def _spill(self) -> None:
        while True:
            try:
                fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                break
            except FileExistsError:
                self.name = self._new_name()
        self._file = os.fdopen(fd, "wb")
        for chunk in self._chunks:
            self._file.write(chunk)
        self._chunks = []

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        self.closed = True
        self._chunks = []
        if self._file is not None:
            self._file.close()

    def reader(self) -> BinaryIO:
        """The received bytes (a Part-10 file: pynetdicom's preamble and File Meta, then the dataset), from the start."""
        if self._file is None:
            data = b"".join(self._chunks)
            self._chunks = [data]  # one copy held, shared with the reader
            return io.BytesIO(data)
        self._file.flush()
        return open(self.name, "rb")  # noqa: SIM115 - the caller closes it


def install_receive_spool(store: Store) -> None:
    """Receive C-STORE datasets into ``store``'s owned spool (see the module docstring)."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    area = str(store.spool_area(RECEIVE_SPOOL))
    # pynetdicom looks NamedTemporaryFile up in its module at call time.
    dimse_messages.NamedTemporaryFile = functools.partial(_spool_file, area, store.spool_prefix())
    # Looked up in pynetdicom's dimse_messages at call time too; used there only for the receive spool.
    dimse_messages.create_file_meta = SpoolMeta
    dimse_messages.write_file_meta_info = _write_spool_meta
    if getattr(Association.run_reactor, "_objfs", False):
        return
    original = Association.run_reactor

    @functools.wraps(original)
    def run_reactor(self: Association) -> None:
        try:
            original(self)
        finally:
            _discard_leftovers(self)

    run_reactor._objfs = True  # type: ignore[attr-defined]
    Association.run_reactor = run_reactor  # type: ignore[method-assign]


class SpoolMeta(NamedTuple):
    """What pynetdicom's ``create_file_meta`` is given for a receive spool file (keyword arguments)."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    implementation_uid: str = PYNETDICOM_IMPLEMENTATION_UID
    implementation_version: str = PYNETDICOM_IMPLEMENTATION_VERSION


def _write_spool_meta(fp: Any, file_meta: Any, enforce_standard: bool = True) -> None:
    """pydicom's ``write_file_meta_info`` (after the preamble and ``DICM``), direct for a :class:`SpoolMeta`."""
    if not isinstance(file_meta, SpoolMeta):
        write_file_meta_info(fp, file_meta, enforce_standard=enforce_standard)
        return
    meta = file_meta_bytes(
        str(file_meta.sop_class_uid),
        str(file_meta.sop_instance_uid),
        str(file_meta.transfer_syntax),
        implementation=(str(file_meta.implementation_uid), str(file_meta.implementation_version)),
    )
    fp.write(meta[132:])


def _spool_file(area: str, prefix: str, **kwargs: Any) -> ReceiveBuffer:
    """pynetdicom's NamedTemporaryFile: a buffer (spilling to the spool area), remembered by the receiving association."""
    # Datasets are decoded on the association's DUL thread, which knows its association.
    assoc = getattr(threading.current_thread(), "assoc", None)
    gateway = getattr(getattr(assoc, "ae", None), "objfs_aets", None) is not None
    spool = ReceiveBuffer(area, prefix, MEMORY_MAX if gateway else 0, kwargs.get("suffix") or "")
    if isinstance(assoc, Association):
        files: list[ReceiveBuffer] = getattr(assoc, _TRACKED, [])
        # Buffers the handler has consumed are closed (their files gone): keep the list short on long associations.
        files = [f for f in files if not f.closed or os.path.exists(f.name)]
        files.append(spool)
        setattr(assoc, _TRACKED, files)
    else:  # not decoded by a DUL thread: nobody would clean it up
        log.warning("receive spool file %s created outside an association", spool.name)
    return spool


def _discard_leftovers(assoc: Association) -> None:
    """Close and remove the receive spool files of an association that has ended."""
    dul = assoc.dul
    if dul.is_alive() and dul is not threading.current_thread():
        # The reactor may end on a kill from another thread before the DUL
        # has stopped; until it has, it could still write, or start a file.
        dul.join(DUL_STOP_WAIT)
        if dul.is_alive():
            dul.kill_dul()
            dul.join(DUL_STOP_WAIT)
    for spool in getattr(assoc, _TRACKED, []):
        try:
            spool.close()
        except OSError:
            pass
        try:
            os.unlink(spool.name)
        except FileNotFoundError:
            continue  # handled and removed by pynetdicom
        except OSError as exc:
            log.warning("could not remove receive spool file %s: %s", spool.name, exc)
            continue
        log.info("removed %s: its association ended before the dataset was stored", spool.name)
    setattr(assoc, _TRACKED, [])
