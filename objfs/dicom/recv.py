"""A PDU read from the socket in few large reads, not 4 KiB at a time (process-wide patch).

pynetdicom's ``AssociationSocket.recv`` reads a PDU with one ``recv(4096)``
call per 4 KiB, each appended to a growing ``bytearray``: a 512 KiB instance
is 128 system calls, 128 copies and 128 re-acquisitions of the GIL by the
DUL thread, which competes for it with the thread storing the previous
instance (measured: ~2.8 ms of CPU per 512 KiB instance on the DUL thread).
:func:`install_large_reads` reads straight into one buffer of the PDU's size.

Guarantees:

* Same result: the bytes asked for, or, when the peer closes the connection
  first, the bytes read until then (pynetdicom reports a short read as a
  closed connection, as before); socket timeouts and errors propagate as
  they did.
* Bounded memory whatever a peer claims: a buffer is allocated up front
  only for a PDU of at most :data:`PREALLOCATE_MAX` bytes (the gateway
  announces a maximum PDU length of 1 MiB); a longer claimed length is
  read as it arrives, :data:`READ_MAX` bytes per call, so memory grows only
  with bytes actually received, as with pynetdicom's own loop.
* Idempotent; affects every pynetdicom association of the process.
"""

from __future__ import annotations

from typing import Any

PREALLOCATE_MAX = 4 << 20
READ_MAX = 1 << 20


def _recv(self: Any, nr_bytes: int) -> bytearray:
    sock = self.socket
    if nr_bytes <= PREALLOCATE_MAX:
        buffer = bytearray(nr_bytes)
        with memoryview(buffer) as view:
            done = 0
            while done < nr_bytes:
                got = sock.recv_into(view[done:], nr_bytes - done)
                if not got:  # closed by the peer: what arrived so far, as pynetdicom returns it
                    return buffer[:done]
                done += got
        return buffer
    stream = bytearray()
    while len(stream) < nr_bytes:
        data = sock.recv(min(READ_MAX, nr_bytes - len(stream)))
        if not data:
            break
        stream += data
    return stream


def install_large_reads() -> None:
    """Make every pynetdicom association read each PDU in few large reads. Idempotent."""
    from pynetdicom.transport import AssociationSocket

    if getattr(AssociationSocket.recv, "_objfs", False):
        return
    _recv._objfs = True  # type: ignore[attr-defined]
    AssociationSocket.recv = _recv  # type: ignore[method-assign]
