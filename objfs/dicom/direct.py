"""DIMSE messages written straight to the socket by the thread that sends them.

pynetdicom sends a DIMSE message as one P-DATA primitive per PDU, each
queued to the association's DUL thread, which runs it through its state
machine, encodes it and writes it: a 512 KiB instance to a peer accepting
16 KiB PDUs (dcmtk's default) is 33 such hand-offs, most of the CPU a C-GET
or C-MOVE spends per instance, and each response (C-STORE, C-FIND, C-GET
pending) waits for the DUL thread to be scheduled. :func:`install_direct_send`
makes the sending thread encode the P-DATA-TF PDUs of a message itself (the
same bytes pynetdicom would write) and write them in batches of about
:data:`BATCH_BYTES`.

Guarantees:

* Same bytes on the wire, same order: the direct path starts only once the
  DUL has written everything queued before (its queue is empty and no
  state-machine action is running: actions run under the association's send
  lock, see :mod:`.reactor`), and nothing else sends P-DATA on the
  association meanwhile (pynetdicom sends DIMSE messages of an association
  from one thread at a time: its reactor thread, or a thread that paused it).
* Only in state Sta6 (established) and on plain TCP: a TLS socket must not be
  written by one thread while the DUL thread reads it, so TLS associations,
  and any association still draining after :data:`DRAIN_SECONDS`, take
  pynetdicom's own path unchanged.
* A failed write is reported to the DUL as a closed connection (Evt17),
  as pynetdicom's own socket layer does; the request then fails as it would.
* Memory: at most one batch plus one PDU held; the file is read one PDU at a time.
"""

from __future__ import annotations

import functools
import logging
import ssl
import struct
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.dimse import _RQ_TO_MESSAGE, _RSP_TO_MESSAGE, DIMSEServiceProvider

from .reactor import send_lock

__all__ = ["BATCH_BYTES", "DRAIN_SECONDS", "install_direct_send", "pdata_tf"]

log = logging.getLogger(__name__)

BATCH_BYTES = 256 << 10  # bytes written per socket call
DRAIN_SECONDS = 5.0  # longest wait for earlier PDUs to be written before falling back to the queue
_DRAIN_POLL = 0.0002
_INSTALLED = "_objfs_direct"


def pdata_tf(context_id: int, pdv: bytes) -> bytes:
    """The P-DATA-TF PDU carrying one presentation data value (control header byte + fragment)."""
    return struct.pack(">BBIIB", 0x04, 0x00, len(pdv) + 5, len(pdv) + 1, context_id) + pdv


def _wait_drained(dul: Any, lock: Any) -> bool:
    """Acquire ``lock`` once the DUL has written everything queued before; False if it does not in time."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while True:
        lock.acquire()
        if not dul.to_provider_queue.queue and dul.state_machine.current_state == "Sta6":
            return True
        lock.release()
        if time.monotonic() > deadline or not dul.is_alive() or dul.state_machine.current_state != "Sta6":
            return False
        time.sleep(_DRAIN_POLL)


def _write(dul: Any, sock: Any, pdus: Any) -> None:
    """Write the P-DATA primitives ``pdus`` yields as PDUs, in batches (the send lock is held)."""
    batch: list[bytes] = []
    size = 0
    try:
        for pdata in pdus:
            [(cx_id, pdv)] = pdata.presentation_data_value_list
            batch.append(pdata_tf(cx_id, pdv))
            size += len(pdv) + 11
            if size >= BATCH_BYTES:
                sock.sendall(b"".join(batch))
                batch, size = [], 0
        if batch:
            sock.sendall(b"".join(batch))
    except OSError as exc:
        log.debug("direct DIMSE send failed: %s", exc)
        dul.event_queue.put("Evt17")  # transport closed, as pynetdicom's socket layer reports it
    finally:
        pdus.close()


def install_direct_send() -> None:
    """Write DIMSE messages from the sending thread (see the module docstring). Idempotent."""
    if getattr(DIMSEServiceProvider.send_msg, _INSTALLED, False):
        return
    original = DIMSEServiceProvider.send_msg

    @functools.wraps(original)
    def send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
        dul = self.dul
        lock = send_lock(dul)
        sock = getattr(dul.socket, "socket", None) if dul.socket is not None else None
        if lock is None or sock is None or isinstance(sock, ssl.SSLSocket) or not _wait_drained(dul, lock):
            return original(self, primitive, context_id)  # pynetdicom's own path, through the DUL thread
        try:
            table = _RQ_TO_MESSAGE if primitive.MessageIDBeingRespondedTo is None else _RSP_TO_MESSAGE
            message = table[primitive.__class__]()
            message.primitive_to_message(primitive)
            message.context_id = context_id
            evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": message})
            _write(dul, sock, message.encode_msg(context_id, self.maximum_pdu_size))
        finally:
            lock.release()
        return None

    setattr(send_msg, _INSTALLED, True)
    DIMSEServiceProvider.send_msg = send_msg  # type: ignore[method-assign]
