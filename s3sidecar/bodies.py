"""Request bodies: from the ASGI receive channel to the engine, verified, in bounded memory.

Three layers:

* :class:`BodySource` (async) pulls raw ``http.request`` messages, with a
  per-message deadline (RequestTimeout) and a disconnect check.
* :class:`Payload` (sans-IO) turns raw bytes into payload bytes: it decodes
  aws-chunked framing (chunk and trailer signatures verified by
  :class:`s3sidecar.sigv4.ChunkedDecoder`), hashes for ``x-amz-content-sha256``
  and the ``x-amz-checksum-*`` value (header or trailer), and enforces the
  declared length and the size limit.
* :class:`BlockingBody` is the file-like the engine reads in its worker
  thread. A refill is one ``trio.from_thread.run`` hop back to the event
  loop that gathers every ASGI message the engine's read needs (one hop per
  segment, not one per message), and the payload hashes run in that worker
  thread, beside the engine; at most one engine read (one segment, bounded
  by :data:`HOP_BYTES`) plus Hypercorn's application queue are in memory
  per upload.

Guarantee: :meth:`Payload.finish` (passed to the engine as ``verify``) raises
before the engine commits if any signature, digest or checksum fails, so a
rejected body leaves nothing stored.
"""

from __future__ import annotations

import io
from typing import Any

import trio
from starlette.datastructures import Headers

from . import checksums
from . import errors as S3
from .sigv4 import ChunkedDecoder, SignedRequest

CHECKSUM_PREFIX = "x-amz-checksum-"
#: The most raw body bytes one hop from the engine's thread gathers (a
#: segment is 1 MiB by default; the engine never asks for more than one).
HOP_BYTES = 4 << 20
#: What :meth:`BlockingBody.prefetch` reads on the event loop before the engine's thread starts.
PREFETCH_BYTES = 1 << 20
_NOT_CHECKSUMS = {"x-amz-checksum-algorithm", "x-amz-checksum-mode", "x-amz-checksum-type"}


class BodySource:
    """The async side of one request body.

    A client that stays silent for ``timeout`` seconds, or whose average
    rate falls below ``min_rate`` bytes/s once it has had ``grace`` seconds,
    gets RequestTimeout. Only time spent waiting for the client counts, so a
    slow engine (the body is read as fast as it is stored) never cuts anyone.
    """

    def __init__(self, receive: Any, timeout: float, *, min_rate: float = 0, grace: float = 0) -> None:
        self._receive = receive
        self._timeout = timeout
        self._min_rate = min_rate
        self._grace = grace
        self._waited = 0.0
        self.received = 0
        self.started = False  # receive() was called: the client was invited to send (100 Continue)
        self.ended = False

    def _wait_budget(self) -> float:
        budget = self._timeout
        if self._min_rate > 0:
            budget = min(budget, self._grace + self.received / self._min_rate - self._waited)
        return max(budget, 0.0)

    async def next(self) -> bytes:
        """The next raw bytes; ``b""`` once the body has ended."""
        self.started = True
        while not self.ended:
            began = trio.current_time()
            with trio.move_on_after(self._wait_budget()) as scope:
                message = await self._receive()
            self._waited += trio.current_time() - began
            if scope.cancelled_caught:
                raise S3.RequestTimeout()
            if message["type"] == "http.disconnect":
                raise S3.IncompleteBody("The client went away before sending the whole body")
            self.ended = not message.get("more_body", False)
            data = message.get("body", b"")
            if data:
                self.received += len(data)
                return data
        return b""

    async def take(self, want: int) -> list[bytes]:
        """Raw messages until at least ``want`` bytes came or the body ended (``[]`` at the end)."""
        out: list[bytes] = []
        got = 0
        while got < want:
            data = await self.next()
            if not data:
                break
            out.append(data)
            got += len(data)
        return out


def _checksum_headers(headers: Headers) -> dict[str, str]:
    found = {}
    for name, value in headers.items():
        if name.startswith(CHECKSUM_PREFIX) and name not in _NOT_CHECKSUMS:
            found[name] = value
    return found


class Payload:
    """Raw body bytes in, verified payload bytes out (no I/O of its own).

    ``declared`` is the payload length the client announced (Content-Length,
    or x-amz-decoded-content-length for aws-chunked); ``limit`` the largest
    payload accepted. After :meth:`finish`, :attr:`checksums` holds the
    verified ``x-amz-checksum-*`` values (header name -> base64), also for an
    algorithm the client only named, which the sidecar then computed.
    """

    def __init__(self, signed: SignedRequest, headers: Headers, *, declared: int | None, limit: int) -> None:
        self.declared = declared
        self.limit = limit
        self.length = 0
        # An anonymous request (signed None) promises no payload hash.
        self._sha = signed.payload_hasher() if signed is not None else None
        trailer_names = [t.strip().lower() for t in headers.get("x-amz-trailer", "").split(",") if t.strip()]
        self._decoder: ChunkedDecoder | None = None
        if signed is not None and signed.is_streaming:
            self._decoder = signed.chunk_decoder(expected_trailers=trailer_names, decoded_length=declared)
        elif trailer_names:
            raise S3.InvalidRequest("x-amz-trailer needs an aws-chunked body")
        given = _checksum_headers(headers)
        if len(given) + len([t for t in trailer_names if t.startswith(CHECKSUM_PREFIX)]) > 1:
            raise S3.InvalidRequest("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
        self._expected: str | None = None
        self._trailer_checksum: str | None = None
        algorithm: str | None = None
        if given:
            name, self._expected = next(iter(given.items()))
            algorithm = name
        elif trailer_names and trailer_names[0].startswith(CHECKSUM_PREFIX):
            algorithm = self._trailer_checksum = trailer_names[0]
        else:
            named = headers.get("x-amz-sdk-checksum-algorithm") or headers.get("x-amz-checksum-algorithm")
            algorithm = named or None
        self._checksum = checksums.make_checksum(algorithm) if algorithm else None
        self.checksums: dict[str, str] = {}

    def feed(self, raw: bytes) -> bytes:
        data = self._decoder.feed(raw) if self._decoder is not None else raw
        if data:
            self.length += len(data)
            if self.length > self.limit:
                raise S3.EntityTooLarge(MaxSizeAllowed=self.limit)
            if self._sha is not None:
                self._sha.update(data)
            if self._checksum is not None:
                self._checksum.update(data)
        return data

    def finish(self) -> None:
        """Raise unless the whole body arrived intact and matches every digest."""
        if self._decoder is not None:
            self._decoder.finish()
        if self.declared is not None and self.length != self.declared:
            raise S3.IncompleteBody()
        if self._sha is not None:
            self._sha.verify()
        if self._checksum is not None:
            header = CHECKSUM_PREFIX + self._checksum.algorithm
            expected = self._expected
            if self._trailer_checksum is not None:
                assert self._decoder is not None
                expected = self._decoder.trailers.get(self._trailer_checksum)
                if expected is None:
                    raise S3.MalformedTrailerError()
            if expected is not None:
                self._checksum.verify(expected)
            self.checksums[header] = self._checksum.b64digest()


class BlockingBody(io.RawIOBase):
    """A blocking, read-only file over a request body, for the engine's worker thread.

    Must be read from a thread started by ``trio.to_thread.run_sync`` (it
    calls back into the event loop with ``trio.from_thread.run``).
    """

    def __init__(self, source: BodySource, payload: Payload) -> None:
        self._source = source
        self._payload = payload
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._prefetched: list[bytes] = []  # raw, not yet fed: hashing belongs to the worker thread

    async def prefetch(self) -> None:
        """Read the body's first :data:`PREFETCH_BYTES` now, on the event loop.

        For a client that sends its body without waiting for ``100
        Continue`` (the bytes are coming anyway): a small upload then needs
        no hop from the engine's thread back to the event loop at all.
        """
        self._prefetched = await self._source.take(PREFETCH_BYTES)

    def readable(self) -> bool:
        return True

    def _feed(self, raws: list[bytes]) -> None:
        # Hashing here, in the engine's worker thread: hashlib and zlib
        # release the GIL on large buffers, so the event loop keeps serving.
        for raw in raws:
            data = self._payload.feed(raw)
            if data:
                self._chunks.append(data)
                self._buffered += len(data)

    def _fill(self, want: int) -> None:
        if self._prefetched:
            raws, self._prefetched = self._prefetched, []
            self._feed(raws)
        while self._buffered < want and not self._eof:
            if self._source.ended:  # set by the last hop: no need to ask the event loop again
                self._eof = True
                break
            raws = trio.from_thread.run(self._source.take, min(want - self._buffered, HOP_BYTES))
            if not raws:
                self._eof = True
                break
            self._feed(raws)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            self._fill(1 << 62)
            size = self._buffered
        else:
            self._fill(size)
        if not self._chunks or size == 0:
            return b""
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        out, rest = data[:size], data[size:]
        self._chunks = [rest] if rest else []
        self._buffered = len(rest)
        return out

    def finish(self) -> None:
        """Drain what the engine did not read and verify the whole body (the engine's ``verify``)."""
        self._fill(1 << 62)
        if self._buffered:
            raise S3.IncompleteBody("The body is longer than its declared length")
        self._payload.finish()


async def read_small_body(source: BodySource, payload: Payload, limit: int) -> bytes:
    """A whole small body (XML documents), verified; more than ``limit`` bytes -> MalformedXML."""
    out = bytearray()
    while True:
        raw = await source.next()
        if not raw:
            break
        out += payload.feed(raw)
        if len(out) > limit:
            raise S3.MalformedXML("The XML you provided was larger than the maximum allowed size")
    payload.finish()
    return bytes(out)


async def drain(source: BodySource, limit: int = 16 << 20) -> bool:
    """Read and drop the rest of a body so the client can read our answer; False if it is too long or broken."""
    seen = 0
    try:
        while seen <= limit:
            data = await source.next()
            if not data:
                return True
            seen += len(data)
    except S3.S3Error:
        pass
    return False
