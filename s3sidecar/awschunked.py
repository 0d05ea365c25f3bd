"""Decoder and verifier for ``Content-Encoding: aws-chunked`` request bodies.

Handles the three streaming ``x-amz-content-sha256`` modes of SigV4 for S3:
``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` (signed chunks),
``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`` (signed chunks and a signed
trailer) and ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` (plain chunks and an
optional trailer, as botocore sends with flexible checksums). Usually built
through :meth:`s3sidecar.sigv4.SignedRequest.chunk_decoder`, which supplies
the signing key, scope and seed signature. Pure module: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

from s3sidecar.errors import (
    IncompleteBody,
    InvalidChunkSizeError,
    InvalidRequest,
    MalformedTrailerError,
    SignatureDoesNotMatch,
)

__all__ = [
    "STREAMING_SIGNED",
    "STREAMING_SIGNED_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "STREAMING_MODES",
    "EMPTY_SHA256",
    "ChunkedDecoder",
]

STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_MODES = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")

_CHUNK_SIZE_RE = re.compile(rb"[0-9a-fA-F]{1,8}")
_SIG_EXT = b"chunk-signature="
_TRAILER_SIG = "x-amz-trailer-signature"
_HEADER, _DATA, _DATA_CRLF, _TRAILER, _MAYBE_DONE, _DONE = range(6)


class ChunkedDecoder:
    """Incremental decoder/verifier for ``Content-Encoding: aws-chunked`` bodies.

    Feed raw body bytes with :meth:`feed`; it returns the payload bytes that
    became available. Call :meth:`finish` at end of body. Guarantees:

    * In signed modes, bytes are returned only after the signature of the
      chunk containing them has been verified (so chunks are buffered, at
      most ``max_chunk_size`` bytes); the chunk chain starts from the seed
      signature, so chunks cannot be dropped, reordered or replayed.
    * In the signed-trailer mode the trailer signature is verified too; the
      canonical trailer is each trailing header as ``name:value\\n``, sorted
      by name, excluding ``x-amz-trailer-signature``.
    * Malformed framing raises ``IncompleteBody`` (truncated),
      ``InvalidRequest`` (bad chunk header / extra data),
      ``InvalidChunkSizeError`` (chunk over ``max_chunk_size``) or
      ``MalformedTrailerError``; a bad signature raises
      ``SignatureDoesNotMatch``. After an error the decoder is unusable.
    * After :meth:`finish`, :attr:`trailers` holds the trailing headers
      (lower-case names, without the trailer signature) and
      :attr:`decoded_bytes` the payload length. If ``decoded_length`` was
      given, a payload of any other length raises ``IncompleteBody``.

    Checksum trailers are exposed, not checked: hash the returned bytes with
    :mod:`s3sidecar.checksums` and compare against :meth:`trailer_checksum`.
    """

    def __init__(
        self,
        mode: str,
        *,
        signing_key: bytes | None = None,
        amz_date: str = "",
        scope: str = "",
        seed_signature: str = "",
        expected_trailers: Iterable[str] | None = None,
        decoded_length: int | None = None,
        max_chunk_size: int = 16 * 1024 * 1024,
        max_line: int = 4096,
        max_trailer_bytes: int = 16 * 1024,
    ) -> None:
        if mode not in STREAMING_MODES:
            raise InvalidRequest(f"not an aws-chunked mode: {mode}")
        self.mode = mode
        self.signed = mode != STREAMING_UNSIGNED_TRAILER
        self.trailer_allowed = mode != STREAMING_SIGNED
        if self.signed and (signing_key is None or not seed_signature):
            raise ValueError("signed streaming needs signing_key and seed_signature")
        self._key = signing_key or b""
        self._date = amz_date
        self._scope = scope
        self._prev = seed_signature
        self._expected_trailers = (
            None if expected_trailers is None else {t.strip().lower() for t in expected_trailers if t.strip()}
        )
        self.decoded_length = decoded_length
        self.max_chunk_size = max_chunk_size
        self.max_line = max_line
        self.max_trailer_bytes = max_trailer_bytes
        self._buf = bytearray()
        self._state = _HEADER
        self._remaining = 0
        self._chunk = bytearray()
        self._chunk_hash = hashlib.sha256()
        self._chunk_sig = ""
        self._trailer_lines: list[tuple[str, str]] = []
        self._trailer_bytes = 0
        self._failed = False
        self.trailers: dict[str, str] = {}
        self.decoded_bytes = 0
        self.chunk_count = 0

    @property
    def done(self) -> bool:
        """True once the terminating chunk and trailer section were fully read."""
        return self._state in (_DONE, _MAYBE_DONE)

    def trailer_checksum(self) -> tuple[str, str] | None:
        """``(algorithm, base64_value)`` of the ``x-amz-checksum-*`` trailer, if any."""
        for name, value in self.trailers.items():
            if name.startswith("x-amz-checksum-"):
                return name[len("x-amz-checksum-") :], value
        return None

    def feed(self, data: bytes) -> bytes:
        """Consume raw body bytes; return newly available (verified) payload bytes."""
        if self._failed:
            raise InvalidRequest("aws-chunked decoder already failed")
        try:
            return self._feed(data)
        except Exception:
            self._failed = True
            raise

    def finish(self) -> None:
        """Signal end of body; raise if the body was truncated or inconsistent."""
        if self._failed:
            raise InvalidRequest("aws-chunked decoder already failed")
        self._failed = True  # any error below is final; cleared on success
        if self._state == _MAYBE_DONE:
            self._complete_trailers()
            self._state = _DONE
        if self._state != _DONE or self._buf:
            raise IncompleteBody("The request body terminated unexpectedly")
        if self.decoded_length is not None and self.decoded_bytes != self.decoded_length:
            raise IncompleteBody("The decoded length of the aws-chunked body does not match x-amz-decoded-content-length")
        self._failed = False

    # -- internals ---------------------------------------------------------

    def _readline(self) -> bytes | None:
        idx = self._buf.find(b"\r\n")
        if idx < 0:
            if len(self._buf) > self.max_line:
                raise InvalidRequest("aws-chunked line too long")
            return None
        if idx > self.max_line:
            raise InvalidRequest("aws-chunked line too long")
        line = bytes(self._buf[:idx])
        del self._buf[: idx + 2]
        return line

    def _feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while True:
            state = self._state
            if state == _HEADER:
                line = self._readline()
                if line is None:
                    break
                self._start_chunk(line)
            elif state == _DATA:
                if not self._buf:
                    break
                take = min(self._remaining, len(self._buf))
                piece = bytes(self._buf[:take])
                del self._buf[:take]
                self._remaining -= take
                self._add_payload(piece, out)
                if self._remaining == 0:
                    self._state = _DATA_CRLF
            elif state == _DATA_CRLF:
                if len(self._buf) < 2:
                    break
                if self._buf[:2] != b"\r\n":
                    raise InvalidRequest("aws-chunked chunk data not followed by CRLF")
                del self._buf[:2]
                if self.signed:
                    self._verify_chunk()
                    out += self._chunk
                    self._chunk = bytearray()
                self._state = _HEADER
            elif state in (_TRAILER, _MAYBE_DONE):
                line = self._readline()
                if line is None:
                    if len(self._buf) + self._trailer_bytes > self.max_trailer_bytes:
                        raise MalformedTrailerError()
                    break
                self._trailer_line(line)
            else:  # _DONE
                if self._buf:
                    raise InvalidRequest("Unexpected data after the end of the aws-chunked payload")
                break
        return bytes(out)

    def _start_chunk(self, line: bytes) -> None:
        size_text, sep, ext = line.partition(b";")
        size_text = size_text.strip()
        if not _CHUNK_SIZE_RE.fullmatch(size_text):
            raise InvalidRequest("Malformed aws-chunked chunk header")
        size = int(size_text, 16)
        if size > self.max_chunk_size:
            raise InvalidChunkSizeError(f"Chunk size {size} exceeds the maximum of {self.max_chunk_size}")
        if self.signed:
            ext = ext.strip()
            if not sep or not ext.startswith(_SIG_EXT) or not _HEX64.fullmatch(ext[len(_SIG_EXT) :].decode("latin-1")):
                raise InvalidRequest("aws-chunked chunk header lacks a valid chunk-signature")
            self._chunk_sig = ext[len(_SIG_EXT) :].decode("ascii").lower()
            self._chunk_hash = hashlib.sha256()
        self.chunk_count += 1
        if size == 0:
            if self.signed:
                self._verify_chunk()
            self._state = _TRAILER
        else:
            self._remaining = size
            self._state = _DATA

    def _add_payload(self, piece: bytes, out: bytearray) -> None:
        self.decoded_bytes += len(piece)
        if self.decoded_length is not None and self.decoded_bytes > self.decoded_length:
            raise IncompleteBody("The decoded length of the aws-chunked body exceeds x-amz-decoded-content-length")
        if self.signed:
            self._chunk_hash.update(piece)
            self._chunk += piece
        else:
            out += piece

    def _verify_chunk(self) -> None:
        string_to_sign = "\n".join(
            ["AWS4-HMAC-SHA256-PAYLOAD", self._date, self._scope, self._prev, EMPTY_SHA256, self._chunk_hash.hexdigest()]
        )
        expected = hmac.new(self._key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, self._chunk_sig):
            raise SignatureDoesNotMatch(
                "The chunk signature we calculated does not match the signature you provided.",
                StringToSign=string_to_sign,
                SignatureProvided=self._chunk_sig,
            )
        self._prev = expected

    def _trailer_line(self, line: bytes) -> None:
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > self.max_trailer_bytes:
            raise MalformedTrailerError()
        if not line:
            if self._state == _TRAILER and not self._trailer_lines and self.trailer_allowed:
                # Empty trailer section: the body may end here, but some
                # clients put a blank line before the trailers, so more
                # data is still acceptable until finish().
                self._state = _MAYBE_DONE
                return
            self._complete_trailers()
            self._state = _DONE
            return
        if not self.trailer_allowed:
            raise InvalidRequest("aws-chunked body has trailing headers but x-amz-content-sha256 allows none")
        name, sep, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if not sep or not name or len(self._trailer_lines) >= 32:
            raise MalformedTrailerError()
        self._state = _TRAILER
        self._trailer_lines.append((name, value.strip()))

    def _complete_trailers(self) -> None:
        trailers: dict[str, str] = {}
        signature: str | None = None
        for name, value in self._trailer_lines:
            if name == _TRAILER_SIG:
                if signature is not None or not self.signed:
                    raise MalformedTrailerError()
                signature = value.lower()
            elif name in trailers:
                raise MalformedTrailerError()
            else:
                trailers[name] = value
        if self._expected_trailers is not None and set(trailers) != self._expected_trailers:
            raise MalformedTrailerError("The trailing headers sent do not match those declared in x-amz-trailer")
        if self.signed and self.trailer_allowed:
            if signature is None:
                raise MalformedTrailerError("Missing x-amz-trailer-signature")
            canonical = "".join(f"{n}:{v}\n" for n, v in sorted(trailers.items()))
            string_to_sign = "\n".join(
                [
                    "AWS4-HMAC-SHA256-TRAILER",
                    self._date,
                    self._scope,
                    self._prev,
                    hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
                ]
            )
            expected = hmac.new(self._key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
            if not (signature.isascii() and hmac.compare_digest(expected, signature)):
                raise SignatureDoesNotMatch(
                    "The trailer signature we calculated does not match the signature you provided.",
                    StringToSign=string_to_sign,
                    SignatureProvided=signature,
                )
            self._prev = expected
        self.trailers = trailers
