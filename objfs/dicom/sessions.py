"""One summary line per DICOM association, logged on ``objfs.dicom`` at INFO when it ends.

The line names the peer (calling AE title, IP and port), the called AE
title, how the association ended (released, aborted, rejected, or the
connection closed), how long it lasted, and what it did: instances stored,
matches found by C-FIND, instances retrieved by C-MOVE/C-GET, and the bytes
of the instances stored and retrieved. For example::

    association CT1@127.0.0.1:50312 -> OBJFS: released after 1.42 s; stored 300 (157.3 MB), found 0, retrieved 0 (0 B)

Guarantee: exactly one line per connection the gateway accepted, written
when the connection closes whatever ended it (a peer that vanishes mid
transfer too), so an administrator can answer "who sent what, when" from
the journal alone. The counting wraps the gateway's own handlers and
changes nothing they return.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pynetdicom import evt

from .spool import ReceiveBuffer

log = logging.getLogger("objfs.dicom")

#: C-STORE statuses that mean the instance is held (success, and the coercion/elements-discarded warnings).
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}
_PENDING = {0xFF00, 0xFF01}


def _is_pending(status: Any) -> bool:
    """Whether a handler's status (an int, or a Dataset carrying Status) is a pending one."""
    value = getattr(status, "Status", status)
    return isinstance(value, int) and value in _PENDING


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


#: How long after the connection closed the line waits for the association to say how it ended:
#: pynetdicom's association thread reports a release or abort while its DUL thread closes the socket.
SETTLE_SECONDS = 1.0


class _Session:
    __slots__ = (
        "start",
        "finished",
        "peer",
        "outcome",
        "ended",
        "closed",
        "logged",
        "stored",
        "stored_bytes",
        "found",
        "retrieved",
        "retrieved_bytes",
        "lock",
    )

    def __init__(self, peer: tuple[str, int]) -> None:
        self.start = time.monotonic()
        self.finished: float | None = None
        self.peer = peer
        self.outcome = "closed"  # until the association says how it ended
        self.ended = self.closed = self.logged = False
        self.stored = self.stored_bytes = self.found = self.retrieved = self.retrieved_bytes = 0
        self.lock = threading.Lock()


class AssociationLog:
    """Counts what each association does and logs its summary line when the connection closes."""

    ATTR = "_objfs_session"

    def handlers(self) -> list[tuple[Any, Callable[[Any], None]]]:
        """The notification handlers to bind on the gateway's server."""
        return [
            (evt.EVT_CONN_OPEN, self._opened),
            (evt.EVT_ACCEPTED, lambda event: self._outcome(event, "established")),
            (evt.EVT_REJECTED, lambda event: self._ended(event, "rejected")),
            (evt.EVT_RELEASED, lambda event: self._ended(event, "released")),
            (evt.EVT_ABORTED, lambda event: self._ended(event, "aborted")),
            (evt.EVT_CONN_CLOSE, self._closed),
        ]

    def _session(self, assoc: Any) -> _Session | None:
        return getattr(assoc, self.ATTR, None)

    def _opened(self, event: Any) -> None:
        address = getattr(event, "address", None) or (event.assoc.requestor.address, event.assoc.requestor.port)
        setattr(event.assoc, self.ATTR, _Session((str(address[0]), int(address[1]))))

    def _outcome(self, event: Any, outcome: str) -> None:
        session = self._session(event.assoc)
        if session is not None:
            with session.lock:
                if not session.ended:
                    session.outcome = outcome

    def _ended(self, event: Any, outcome: str) -> None:
        """Released, aborted or rejected: the line is written now if the connection is closed already."""
        session = self._session(event.assoc)
        if session is None:
            return
        with session.lock:
            if session.ended:  # the first word stands (a rejection is followed by the socket's close)
                return
            session.outcome, session.ended = outcome, True
            closed = session.closed
        if closed:
            self._log(event.assoc, session)

    def _closed(self, event: Any) -> None:
        """The connection closed: the line now, or once the association says how it ended (or soon anyway)."""
        session = self._session(event.assoc)
        if session is None:
            return
        with session.lock:
            session.closed = True
            session.finished = time.monotonic()
            ended = session.ended
        if ended:
            self._log(event.assoc, session)
        else:
            timer = threading.Timer(SETTLE_SECONDS, self._log, (event.assoc, session))
            timer.daemon = True
            timer.start()

    def _log(self, assoc: Any, session: _Session) -> None:
        with session.lock:
            if session.logged:
                return
            session.logged = True
        requestor, acceptor = assoc.requestor, assoc.acceptor
        calling = str(requestor.ae_title or "").strip() or "?"
        called = str(acceptor.ae_title or "").strip() or "?"
        outcome = "closed without release" if session.outcome == "established" else session.outcome
        log.info(
            "association %s@%s:%d -> %s: %s after %.2f s; stored %d (%s), found %d, retrieved %d (%s)",
            calling,
            session.peer[0],
            session.peer[1],
            called,
            outcome,
            (session.finished or time.monotonic()) - session.start,
            session.stored,
            _size(session.stored_bytes),
            session.found,
            session.retrieved,
            _size(session.retrieved_bytes),
        )

    # -- wrappers of the gateway's intervention handlers -------------------------------------

    def counting_store(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """C-STORE: an instance counts as stored when the status says it is held."""

        def on_store(event: Any) -> Any:
            result = handler(event)
            session = self._session(event.assoc)
            code = getattr(result, "Status", result)
            if session is not None and isinstance(code, int) and code in _STORED:
                spool = getattr(event.request, "_dataset_file", None)
                try:
                    size = spool.size if isinstance(spool, ReceiveBuffer) else Path(event.dataset_path).stat().st_size
                except (AttributeError, OSError):
                    size = 0
                with session.lock:
                    session.stored += 1
                    session.stored_bytes += size
            return result

        return on_store

    def counting_find(self, handler: Callable[[Any], Iterator[Any]]) -> Callable[[Any], Iterator[Any]]:
        """C-FIND: every pending response is one match found."""

        def on_find(event: Any) -> Iterator[Any]:
            session = self._session(event.assoc)
            for item in handler(event):
                if session is not None and isinstance(item, tuple) and len(item) == 2 and _is_pending(item[0]):
                    session.found += 1
                yield item

        return on_find

    def counting_retrieve(self, handler: Callable[[Any], Iterator[Any]]) -> Callable[[Any], Iterator[Any]]:
        """C-MOVE/C-GET: every instance handed to pynetdicom to send (an unreadable one is not counted)."""

        def on_retrieve(event: Any) -> Iterator[Any]:
            session = self._session(event.assoc)
            for item in handler(event):
                if session is not None and isinstance(item, tuple) and len(item) == 2 and _is_pending(item[0]):
                    path = getattr(item[1], "_objfs_path", None)
                    if path is not None:
                        try:
                            size = Path(path).stat().st_size
                        except OSError:
                            size = 0
                        session.retrieved += 1
                        session.retrieved_bytes += size
                yield item

        return on_retrieve
