"""``100 Continue`` only once the application asks for the request body.

Hypercorn (0.18) answers ``Expect: 100-continue`` as soon as it has parsed
the request headers, before the application has looked at them: a client is
invited to send a body the sidecar is about to refuse (unsigned, badly
signed, unauthorised, oversized). :func:`install` changes Hypercorn's
HTTP/1.1 protocol so the interim response goes out when the application
first calls ``receive()``, as uvicorn and S3 itself do.

Guarantees, once installed:

* An application that answers without reading the body never sends
  ``100 Continue``; the client does not send its body, and Hypercorn closes
  the connection after the answer (the request was not read to its end).
* A client that sends its body without waiting is unaffected: Hypercorn
  reads what arrives, bounded by its application queue, as before.
* A request Hypercorn cannot parse (a raw space, newline or non-ASCII byte
  in its target, a malformed header) is answered with an S3 XML error
  (InvalidURI for a 400), not an empty framework answer.
* Status lines carry their reason phrase (``HTTP/1.1 403 Forbidden``):
  botocore, refused while it waits for ``100 Continue``, recognises a final
  answer only by a three-part status line.

* Hypercorn reads the socket :data:`READ_SIZE` bytes at a time (its own
  default is 64 KiB): a large upload arrives in a few large ASGI messages,
  not one per 64 KiB, and every message costs parsing, queueing and a task
  switch. Memory per connection stays bounded by Hypercorn's application
  queue (``max_app_queue_size`` messages, set in :mod:`s3sidecar.server`).

* A client hanging up while the server closes its connection cannot stop
  the server (:func:`_close_between_sends`).

Process-wide: it replaces ``hypercorn.protocol.H11Protocol``, so another
Hypercorn application in the same process gets the same (standard)
behaviour. HTTP/2 never sent the interim response and is unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from itertools import chain
from typing import Any

import h11
import hypercorn.protocol
import hypercorn.trio.tcp_server
import trio
from hypercorn.protocol.events import Response
from hypercorn.protocol.h11 import H11Protocol


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


class _GatedConnection(h11.Connection):
    """An h11 connection that admits the client waits for 100-continue only after the body was asked for."""

    body_wanted = False
    cycle = 0

    @property
    def they_are_waiting_for_100_continue(self) -> bool:  # read by Hypercorn's event loop
        return self.body_wanted and super().they_are_waiting_for_100_continue

    def start_next_cycle(self) -> None:
        super().start_next_cycle()
        self.body_wanted = False
        self.cycle += 1


class _AskingApp:
    """Hypercorn's app wrapper whose ``receive`` first releases the ``100 Continue`` of its request."""

    def __init__(self, app: Callable[..., Awaitable[None]], protocol: DeferredContinueH11Protocol) -> None:
        self.app = app
        self.protocol = protocol

    async def __call__(self, scope: Any, receive: Callable[[], Awaitable[Any]], send: Any, *rest: Any) -> None:
        connection = self.protocol.connection
        cycle = connection.cycle if isinstance(connection, _GatedConnection) else -1
        asked = False

        async def receive_body() -> Any:
            nonlocal asked
            if not asked:
                asked = True
                await self.protocol.release_body(cycle)
            return await receive()

        await self.app(scope, receive_body, send, *rest)


class DeferredContinueH11Protocol(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol, sending ``100 Continue`` when the app first reads the body."""

    def __init__(self, app: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(app, config, *args, **kwargs)
        self.connection = _GatedConnection(h11.SERVER, max_incomplete_event_size=config.h11_max_incomplete_size)
        self.app = _AskingApp(app, self)

    async def _send_error_response(self, status_code: int) -> None:
        """Hypercorn's answer to a request it could not parse, as an S3 error document."""
        from . import errors as S3

        kind = {400: S3.InvalidURI, 431: S3.RequestHeaderSectionTooLarge}.get(status_code, S3.S3Error)
        body = kind().to_xml()
        headers = [
            (b"content-type", b"application/xml"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *self.config.response_headers("h11"),
        ]
        await self._send_h11_event(h11.Response(status_code=status_code, headers=headers, reason=_reason(status_code)))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())

    async def stream_send(self, event: Any) -> None:
        if isinstance(event, Response) and event.status_code >= 200:
            # As Hypercorn, plus the reason phrase: a client that waited for
            # 100-continue and gets a final answer instead (botocore) only
            # recognises a status line of three parts.
            headers = list(chain(event.headers, self.config.response_headers("h11")))
            if self.keep_alive_requests >= self.config.keep_alive_max_requests:
                headers.append((b"connection", b"close"))
            await self._send_h11_event(
                h11.Response(headers=headers, status_code=event.status_code, reason=_reason(event.status_code))
            )
        else:
            await super().stream_send(event)

    async def release_body(self, cycle: int) -> None:
        connection = self.connection
        if not isinstance(connection, _GatedConnection) or connection.cycle != cycle or connection.body_wanted:
            return
        connection.body_wanted = True
        if connection.they_are_waiting_for_100_continue:
            await self._send_h11_event(h11.InformationalResponse(status_code=100, headers=self.config.response_headers("h11")))


_hypercorn_close = hypercorn.trio.tcp_server.TCPServer._close


async def _close_between_sends(self: hypercorn.trio.tcp_server.TCPServer) -> None:
    """Hypercorn's ``TCPServer._close``, its half-close taken under the connection's send lock.

    Hypercorn half-closes (``send_eof``, which holds the stream's send side
    across a checkpoint) without the lock its other sends take: a client
    that hangs up while the server closes can make Hypercorn's error answer
    collide with it, and the BusyResourceError escapes to the server's
    nursery and stops the whole server. A send already in progress (the lock
    is held, maybe on a client that does not read) is not waited for: the
    half-close is skipped, as Hypercorn skips it when the stream is busy.
    """
    try:
        self.send_lock.acquire_nowait()
    except trio.WouldBlock:
        await self.stream.aclose()
        return
    try:
        await _hypercorn_close(self)
    finally:
        self.send_lock.release()


#: Bytes Hypercorn asks the socket for per read (its module constant, read on every call).
READ_SIZE = 256 << 10


def install() -> None:
    """Make every Hypercorn HTTP/1.1 connection of this process defer ``100 Continue`` (idempotent)."""
    hypercorn.protocol.H11Protocol = DeferredContinueH11Protocol  # type: ignore[misc]
    hypercorn.trio.tcp_server.MAX_RECV = READ_SIZE
    hypercorn.trio.tcp_server.TCPServer._close = _close_between_sends  # type: ignore[method-assign]
