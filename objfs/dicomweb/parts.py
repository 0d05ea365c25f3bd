"""``multipart/related`` bodies (PS3.18 8.6, RFC 2387): Accept negotiation, writing, streaming reading.

Guarantees: a response body is produced part by part (never held whole);
:class:`PartReader` writes each part of a request body to its own file as the
body arrives, so memory stays bounded whatever the size of an upload, and
refuses a body that does not end with its closing delimiter.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .engine import HTTPError

CRLF = b"\r\n"


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: ``type/subtype`` and its parameters (lower-case names)."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def part_type(self) -> str | None:
        """For ``multipart/related``: the ``type`` of its parts."""
        return self.params.get("type")


def _split_params(text: str) -> tuple[str, dict[str, str]]:
    pieces, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
    pieces.append("".join(current))
    params = {}
    for piece in pieces[1:]:
        name, _, value = piece.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return pieces[0].strip().lower(), params


def parse_media_type(text: str) -> MediaRange:
    media_type, params = _split_params(text)
    return MediaRange(media_type, params)


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, in order (``*/*`` when absent)."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    out: list[MediaRange] = []
    quoted, current = False, []
    for ch in header:  # commas inside quoted parameters do not split
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append(parse_media_type("".join(current)))
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        out.append(parse_media_type("".join(current)))
    return [r for r in out if r.media_type]


def new_boundary() -> str:
    return "objfs-" + secrets.token_hex(12)


def content_type(boundary: str, part_type: str, transfer_syntax: str | None = None) -> str:
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


def part_header(boundary: str, content_type_value: str, location: str | None = None) -> bytes:
    head = f"--{boundary}\r\nContent-Type: {content_type_value}\r\n"
    if location:
        head += f"Content-Location: {location}\r\n"
    return head.encode() + CRLF


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode()


async def single_part(boundary: str, content_type_value: str, body: bytes) -> AsyncIterator[bytes]:
    yield part_header(boundary, content_type_value) + body + CRLF + closing(boundary)


class PartReader:
    """Splits a streamed ``multipart/related`` body into files, one per part.

    Feed it the body chunk by chunk (:meth:`feed`), then :meth:`finish`;
    :attr:`parts` lists ``(content type, path)`` of the parts read.
    ``open_part`` makes the file each part goes to.
    """

    def __init__(self, boundary: str, open_part: callable) -> None:  # type: ignore[valid-type]
        if not boundary or len(boundary) > 200:
            raise HTTPError(400, "multipart/related body without a valid boundary")
        self.delimiter = CRLF + b"--" + boundary.encode()
        self.open_part = open_part
        self.parts: list[tuple[str, Path]] = []
        self._buf = CRLF  # the first delimiter has no CRLF before it
        self._out: BinaryIO | None = None
        self._in_headers = False
        self._done = False

    def feed(self, chunk: bytes) -> None:
        if self._done:
            return
        self._buf += chunk
        while self._step():
            pass

    def _step(self) -> bool:
        if self._in_headers:
            text = CRLF + self._buf  # so an empty header section is found too
            end = text.find(CRLF + CRLF)
            if end < 0:
                if len(self._buf) > 16384:
                    raise HTTPError(400, "part header section too long")
                return False
            headers = text[2:end].decode("latin-1").split("\r\n") if end > 0 else []
            self._buf = text[end + 4 :]
            ctype = "application/octet-stream"
            for line in headers:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-type":
                    ctype = value.strip()
            path, self._out = self.open_part()
            self.parts.append((ctype, path))
            self._in_headers = False
            return True
        pos = self._buf.find(self.delimiter)
        if pos < 0:
            # keep what could be the start of a delimiter; the rest is part body
            keep = len(self.delimiter) + 4
            if len(self._buf) > keep:
                if self._out is not None:
                    self._out.write(self._buf[:-keep])
                self._buf = self._buf[-keep:]
            return False
        if len(self._buf) < pos + len(self.delimiter) + 2:
            return False  # need the two bytes after the delimiter
        if self._out is not None:
            self._out.write(self._buf[:pos])
            self._out.close()
            self._out = None
        after = self._buf[pos + len(self.delimiter) : pos + len(self.delimiter) + 2]
        self._buf = self._buf[pos + len(self.delimiter) + 2 :]
        if after == b"--":
            self._done = True
            return False
        if after != CRLF:  # transport padding, then the CRLF ending the delimiter line
            rest = (after + self._buf).lstrip(b" \t")
            self._buf = rest[2:] if rest.startswith(CRLF) else rest
        self._in_headers = True
        return True

    def finish(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        if not self._done:
            raise HTTPError(400, "multipart/related body ends without its closing delimiter")
