"""One S3 request as the handlers see it, and the small helpers they share."""

from __future__ import annotations

import base64
import binascii
import email.utils
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from objfs.store import AccessKey, Principal

from . import errors as S3
from .bodies import BlockingBody, BodySource, Payload, read_small_body
from .bridge import Engine
from .settings import Settings
from .sigv4 import SignedRequest
from .tags import check_tags, parse_query_tags

XML = "application/xml"
STANDARD_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language", "expires")


@dataclass
class S3Request:
    """A routed, authenticated request (authorised and size-checked once a handler sees it).

    ``bucket`` and ``key`` are decoded (None when absent); ``query`` holds the
    first value of each query parameter (subresources like ``?uploads`` map
    to ``""``).
    """

    request: Request
    method: str
    bucket: str | None
    key: str | None
    query: dict[str, str]
    headers: Headers
    access: AccessKey
    signed: SignedRequest
    engine: Engine
    settings: Settings
    principal: Principal
    request_id: str
    #: The S3 operation (``PutObject``) and whether it changes anything.
    operation: str = ""
    write: bool = False
    source: BodySource = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.source = BodySource(self.request.receive, s.body_timeout, min_rate=s.body_min_rate, grace=s.body_rate_grace)

    @property
    def store(self) -> Any:
        return self.engine.store

    def version_id(self) -> str | None:
        """The ``versionId`` query parameter; None when absent, InvalidArgument when empty (as S3)."""
        version = self.query.get("versionId")
        if version == "":
            raise S3.InvalidArgument("Version id cannot be the empty string", ArgumentName="versionId", ArgumentValue="")
        return version

    def bypass_governance(self) -> bool:
        """Whether the client asks to bypass GOVERNANCE retention.

        Only a request, not a right: the engine honours it only for keys
        created with the bypass-governance permission.
        """
        return self.headers.get("x-amz-bypass-governance-retention", "").strip().lower() == "true"

    # -- bodies ---------------------------------------------------------------

    def declared_length(self, *, required: bool) -> int | None:
        """The payload length the client announced; EntityTooLarge above the limit."""
        name = "x-amz-decoded-content-length" if self.signed is not None and self.signed.is_streaming else "content-length"
        text = self.headers.get(name)
        if text is None:
            if required:
                raise S3.MissingContentLength()
            return None
        if not text.strip().isdigit():
            raise S3.InvalidArgument(f"{name} is not a number", ArgumentName=name, ArgumentValue=text)
        length = int(text)
        if length > self.settings.max_object_size:
            raise S3.EntityTooLarge(ProposedSize=length, MaxSizeAllowed=self.settings.max_object_size)
        return length

    def stream_body(self) -> tuple[BlockingBody, Payload, int]:
        """(engine-readable body, its verifier, declared length) for an object or part upload."""
        length = self.declared_length(required=True)
        assert length is not None
        payload = Payload(self.signed, self.headers, declared=length, limit=self.settings.max_object_size)
        return BlockingBody(self.source, payload), payload, length

    async def prefetch_body(self, body: BlockingBody) -> None:
        """Read the start of an upload on the event loop, unless the client waits for ``100 Continue``.

        Call once nothing the handler checks on the event loop can refuse the
        request any more: a client that waits must get its refusal, not an
        invitation to send.
        """
        if "100-continue" not in self.headers.get("expect", "").lower():
            await body.prefetch()

    async def small_body(self, *, object_checksums: bool = False) -> bytes:
        """A whole XML document, verified against every digest the client sent (Content-MD5 too).

        ``object_checksums``: the request's ``x-amz-checksum-*`` headers
        describe the object being made (CompleteMultipartUpload), not this
        document, so they are not checked against it.
        """
        declared = self.declared_length(required=False)
        if declared is not None and declared > self.settings.max_xml_bytes:
            raise S3.MalformedXML("The XML you provided was larger than the maximum allowed size")
        headers = self.headers
        if object_checksums:
            headers = Headers(raw=[(n, v) for n, v in headers.raw if not n.lower().startswith(b"x-amz-checksum-")])
        payload = Payload(self.signed, headers, declared=declared, limit=self.settings.max_xml_bytes + 1)
        body = await read_small_body(self.source, payload, self.settings.max_xml_bytes)
        md5 = self.content_md5()
        if md5 is not None:
            import hashlib

            if hashlib.md5(body).digest() != md5:
                raise S3.BadDigest()
        return body

    # -- headers ---------------------------------------------------------------

    def content_md5(self) -> bytes | None:
        text = self.headers.get("content-md5")
        if text is None:
            return None
        try:
            digest = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise S3.InvalidDigest() from None
        if len(digest) != 16:
            raise S3.InvalidDigest()
        return digest

    def user_metadata(self) -> dict[str, str]:
        """``x-amz-meta-*`` headers (names lower-cased, prefix removed); MetadataTooLarge over 2 KiB."""
        meta = {}
        size = 0
        for name, value in self.headers.items():
            if name.startswith("x-amz-meta-"):
                short = name[len("x-amz-meta-") :]
                meta[short] = value
                size += len(short) + len(value.encode("latin-1", "replace"))
        if size > self.settings.max_metadata_bytes:
            raise S3.MetadataTooLarge(MaxSizeAllowed=self.settings.max_metadata_bytes)
        return meta

    def standard_headers(self) -> dict[str, str]:
        """Standard headers S3 keeps with an object; ``aws-chunked`` is transport, not content."""
        out = {}
        for name in STANDARD_HEADERS:
            value = self.headers.get(name)
            if value is None:
                continue
            if name == "content-encoding":
                codings = [c.strip() for c in value.split(",") if c.strip() and c.strip().lower() != "aws-chunked"]
                if not codings:
                    continue
                value = ",".join(codings)
            out[name] = value
        return out

    def tagging_header(self) -> dict[str, str] | None:
        """Tags from ``x-amz-tagging`` (URL-encoded query form), validated like a Tagging body."""
        text = self.headers.get("x-amz-tagging")
        if text is None:
            return None
        return check_tags(parse_query_tags(text))

    def http_date_header(self, name: str) -> float | None:
        text = self.headers.get(name)
        if text is None:
            return None
        try:
            return email.utils.parsedate_to_datetime(text).timestamp()
        except (TypeError, ValueError, IndexError):
            return None  # S3 ignores unparseable dates


def xml_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type=XML)


def empty_response(status: int = 204, headers: dict[str, str] | None = None) -> Response:
    return Response(b"", status_code=status, headers=headers)


def quote_etag(etag: str) -> str:
    return f'"{etag}"'


def url_encode(value: str, encoding: str | None) -> str:
    """Listing values as S3 returns them with ``encoding-type=url``."""
    if encoding != "url":
        return value
    from urllib.parse import quote

    return quote(value, safe="/")


def decode_copy_source(text: str) -> tuple[str, str, str | None]:
    """``x-amz-copy-source`` -> (bucket, key, version id or None)."""
    path, _, query = text.partition("?")
    path = unquote(path).lstrip("/")
    bucket, _, key = path.partition("/")
    if not bucket or not key:
        raise S3.InvalidArgument("Invalid copy source object key", ArgumentName="x-amz-copy-source", ArgumentValue=text)
    version = None
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "versionId":
            version = unquote(value) or None
    return bucket, key, version
