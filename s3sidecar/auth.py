"""Who is asking and what they may do: SigV4 (s3sidecar.sigv4) over the store's keys.

Guarantees:

* Every request is authenticated; anonymous requests are AccessDenied.
* Secrets come from ``objfs.store.keys.KeyRing`` (``objfs key create``).
  Keys are cached in memory and the keys file re-read (in a worker thread,
  never on the event loop) when it may have changed: at most once a second,
  and at once when an unknown access key shows up, so a key created while
  the sidecar runs works on its first request.
* Read-only keys may only read (GET, HEAD, listings); keys limited to named
  buckets touch only those buckets (ListBuckets shows only those), also as
  the source of a copy.
* :func:`authorize` is the one permission hook, called from the headers
  alone, before any byte of the body is read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from objfs.store import Principal
from objfs.store.keys import AccessKey, KeyRing

from . import errors as S3
from .context import decode_copy_source
from .sigv4 import SignedRequest, verify_request

if TYPE_CHECKING:
    from .context import S3Request

#: Operations that also read the object named by ``x-amz-copy-source``.
COPY_OPERATIONS = frozenset(("CopyObject", "UploadPartCopy"))

REFRESH_SECONDS = 1.0
# An unknown key forces a re-read, but not more often than this, so a flood
# of bad keys cannot turn into a flood of file reads.
UNKNOWN_REFRESH_SECONDS = 0.1


class Authenticator:
    """Verifies requests against the keys of one store."""

    def __init__(self, store_root: Path, region: str) -> None:
        self.ring = KeyRing.of_store(Path(store_root))
        self.region = region
        self._keys: dict[str, AccessKey] = {}
        self._loaded = -1e9
        self._lock = trio.Lock()

    async def _refresh(self, min_age: float) -> None:
        async with self._lock:
            if time.monotonic() - self._loaded < min_age:
                return
            keys = await trio.to_thread.run_sync(self.ring.all)
            self._keys = {k.access_key: k for k in keys}
            self._loaded = time.monotonic()

    async def authenticate(
        self, method: str, raw_path: bytes, query_string: bytes, headers: Iterable[tuple[bytes, bytes]]
    ) -> tuple[AccessKey, SignedRequest]:
        """The key that signed this request and what the signature proves.

        Raises the S3 errors of :func:`s3sidecar.sigv4.verify_request`.
        """
        if time.monotonic() - self._loaded > REFRESH_SECONDS:
            await self._refresh(REFRESH_SECONDS)
        headers = list(headers)
        auth_text = b""
        query_lower = query_string.lower()
        for name, value in headers:
            if name == b"authorization":
                auth_text = value
        # Cheap pre-check so an unknown key refreshes the ring before verification.
        if auth_text or b"x-amz-credential=" in query_lower:
            access = _access_key_of(auth_text, query_string)
            if access and access not in self._keys:
                await self._refresh(UNKNOWN_REFRESH_SECONDS)

        def lookup(access_key: str) -> str | None:
            key = self._keys.get(access_key)
            return key.secret_key if key is not None else None

        signed = verify_request(method, raw_path, query_string, headers, lookup, self.region, time.time())
        return self._keys[signed.access_key], signed


def _access_key_of(auth: bytes, query: bytes) -> str:
    from urllib.parse import unquote

    if auth:
        text = auth.decode("latin-1")
        pos = text.find("Credential=")
        if pos >= 0:
            return text[pos + len("Credential=") :].split("/", 1)[0].strip()
        return ""
    for pair in query.decode("latin-1").split("&"):
        name, _, value = pair.partition("=")
        if name.lower() == "x-amz-credential":
            return unquote(value).split("/", 1)[0]
    return ""


def authorize(req: S3Request) -> None:
    """Raise AccessDenied unless ``req.access`` may do ``req.operation``: the sidecar's one permission hook.

    Called once per request, after the signature and before any byte of the
    body is read or a request slot is taken. A copy's source bucket (from
    ``x-amz-copy-source``) is checked here too.
    """
    key = req.access
    if req.write and key.read_only:
        raise S3.AccessDenied("This access key is read-only")
    if req.bucket is not None and not key.may_access(req.bucket):
        raise S3.AccessDenied(f"This access key may not access bucket {req.bucket}")
    if req.operation in COPY_OPERATIONS:
        bucket = decode_copy_source(req.headers["x-amz-copy-source"])[0]
        if not key.may_access(bucket):
            raise S3.AccessDenied(f"This access key may not access bucket {bucket}")


def principal_of(key: AccessKey) -> Principal:
    """The engine's notion of the caller (for WORM governance bypass)."""
    return Principal(name=f"s3:{key.name}", bypass_governance=key.bypass_governance)
