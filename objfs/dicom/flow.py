"""Bounded memory when pynetdicom sends a large dataset (process-wide patches).

pynetdicom's DIMSE layer cuts a message into P-DATA primitives with a
generator (reading a file-backed dataset one PDU at a time) and hands each
to the association's DUL thread through an *unbounded* queue. Reading a file
is faster than a socket drains, so without a bound the whole instance ends
up queued in memory: a 360 MiB whole-slide image retrieved by C-GET made the
gateway peak at 375 MiB. :func:`install_send_backpressure` makes the sender
wait for room instead.

Receiving needs no such help: pynetdicom decodes each received P-DATA on the
DUL thread itself (writing it to the spool file with
``STORE_RECV_CHUNKED_DATASET``) before it reads the next PDU from the socket,
so TCP flow control already holds a fast sender back.

Guarantees, once installed:

* At most :data:`MAX_QUEUED_PDATA` P-DATA primitives wait to be sent per
  association, each of at most :data:`SEND_PDU_CAP` bytes (less if the
  peer's maximum PDU length is smaller): 16 MiB per association. Without
  the cap a peer announcing a huge maximum, or 0 ("unlimited", PS3.8
  9.3.1), would make pynetdicom read that much, or the whole file, into one
  PDU. Sending PDUs shorter than the peer's maximum is always allowed.
* A sender never blocks on an association whose DUL thread has stopped:
  P-DATA that could never be sent are dropped (pynetdicom then fails the
  operation as it would have anyway, when no response arrives).
* Control primitives (A-ASSOCIATE, A-RELEASE, A-ABORT) are never delayed.
* Idempotent; affects every pynetdicom association of the process (the
  gateway's C-GET responses and its C-MOVE sub-associations alike).
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA

__all__ = ["MAX_QUEUED_PDATA", "SEND_PDU_CAP", "install_send_backpressure"]

log = logging.getLogger(__name__)

#: P-DATA primitives allowed to wait for the socket, per association. With
#: 4 or 8 a 360 MiB C-GET on loopback took ~50 % longer (the sender is woken
#: per PDU); 16 and 32 measured alike.
MAX_QUEUED_PDATA = 16
#: Longest PDU sent, whatever the peer accepts (0 means any length). 1 MiB
#: already makes pynetdicom's per-PDU cost negligible.
SEND_PDU_CAP = 1 << 20
_RECHECK_SECONDS = 0.1  # how often a waiting sender re-checks that the DUL still runs


def _wait_for_room(dul: DULServiceProvider) -> bool:
    """Block until ``dul``'s send queue has room; False if it will never drain.

    Waits on the queue's own ``not_full`` condition, which ``Queue.get``
    notifies, so a sender wakes as soon as the DUL thread takes a PDU.
    """
    queue = dul.to_provider_queue
    with queue.not_full:
        # len(queue.queue), not qsize(): qsize() takes the mutex we hold.
        while len(queue.queue) >= MAX_QUEUED_PDATA:
            if getattr(dul, "_kill_thread", False) or not dul.is_alive():
                return False
            queue.not_full.wait(_RECHECK_SECONDS)
    return True


def install_send_backpressure() -> None:
    """Bound what pynetdicom queues for sending (see the module docstring). Idempotent."""
    if getattr(DULServiceProvider.send_pdu, "_objfs", False):
        return
    original_send_pdu = DULServiceProvider.send_pdu
    original_max_pdu = DIMSEServiceProvider.maximum_pdu_size

    @functools.wraps(original_send_pdu)
    def send_pdu(self: DULServiceProvider, primitive: Any) -> None:
        # The DUL thread itself must never wait for its own queue to drain.
        if isinstance(primitive, P_DATA) and threading.current_thread() is not self:
            if not _wait_for_room(self):
                log.debug("association ended; P-DATA not queued")
                return
        original_send_pdu(self, primitive)

    def maximum_pdu_size(self: DIMSEServiceProvider) -> int:
        """The length DIMSE cuts messages to: the peer's maximum, at most SEND_PDU_CAP."""
        peer = original_max_pdu.fget(self)  # type: ignore[union-attr]
        return min(peer, SEND_PDU_CAP) if peer else SEND_PDU_CAP

    send_pdu._objfs = True  # type: ignore[attr-defined]
    DULServiceProvider.send_pdu = send_pdu  # type: ignore[method-assign]
    DIMSEServiceProvider.maximum_pdu_size = property(maximum_pdu_size)  # type: ignore[assignment,method-assign]
