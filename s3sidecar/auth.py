"""Who is asking and what they may do: SigV4 (s3sidecar.sigv4) over the store's keys.

Guarantees:

* Every signed request is verified; an unsigned one is anonymous, and the
  engine allows it only what a bucket's ACL or policy grants anyone.
* Secrets come from the store's keys (``Store.keys``, ``objfs key create``).
  Keys are cached in memory and the keys file re-read (in a worker thread,
  never on the event loop) when it may have changed: at most once a second,
  and at once when an unknown access key shows up, so a key created while
  the sidecar runs works on its first request.
* This module decides nothing about rights: :func:`principal_of` hands the
  key's rights to the engine, and :func:`authorize` asks the engine
  (``Store.authorize``) whether the request's operation is allowed, before
  any byte of its body is read. A refusal is audited by the engine as a
  ``denied`` line naming the key and answered AccessDenied. Lock headers
  on a write ask for the retention / legal-hold rights, a copy also for
  reading its source's bucket.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

from objfs.store import AccessKey, Principal, Store

from .context import decode_copy_source
from .handlers.lock import HOLD_HEADER, MODE_HEADER
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

    def __init__(self, store: Store, region: str) -> None:
        self.ring = store.keys
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
    ) -> tuple[AccessKey | None, SignedRequest | None]:
        """The key that signed this request and what the signature proves; (None, None) if it is unsigned.

        An unsigned request is anonymous: the engine allows it only what a
        bucket's ACL or policy grants anyone. Raises the S3 errors of
        :func:`s3sidecar.sigv4.verify_request`.
        """
        if time.monotonic() - self._loaded > REFRESH_SECONDS:
            await self._refresh(REFRESH_SECONDS)
        headers = list(headers)
        if is_anonymous(headers, query_string):
            return None, None
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


_SIGNATURE_PARAMETERS = (b"x-amz-credential=", b"x-amz-signature=", b"awsaccesskeyid=", b"signature=")


def is_anonymous(headers: list[tuple[bytes, bytes]], query: bytes) -> bool:
    """Whether a request carries no credentials at all (no Authorization header, no presigned parameters)."""
    if any(name == b"authorization" for name, _ in headers):
        return False
    lowered = b"&" + query.lower()
    return not any(b"&" + parameter in lowered for parameter in _SIGNATURE_PARAMETERS)


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


#: S3 operation -> the engine action it performs; the engine's access table says who may.
ACTIONS: dict[str, str] = {
    "ListBuckets": "list",
    "HeadBucket": "head",
    "GetBucketLocation": "read",
    "GetBucketVersioning": "read",
    "GetObjectLockConfiguration": "read",
    "ListObjects": "list",
    "ListObjectsV2": "list",
    "ListObjectVersions": "list",
    "ListMultipartUploads": "list",
    "CreateBucket": "create-bucket",
    "DeleteBucket": "delete-bucket",
    "PutBucketVersioning": "bucket-settings",
    "PutObjectLockConfiguration": "lock-config",
    "GetBucketLifecycleConfiguration": "read",
    "PutBucketLifecycleConfiguration": "bucket-settings",
    "DeleteBucketLifecycleConfiguration": "bucket-settings",
    "GetBucketReplication": "read",
    "PutBucketReplication": "bucket-settings",
    "DeleteBucketReplication": "bucket-settings",
    "GetBucketEncryption": "read",
    "PutBucketEncryption": "bucket-settings",
    "DeleteBucketEncryption": "bucket-settings",
    "HeadObject": "head",
    "GetObject": "read",
    "GetObjectRetention": "read",
    "GetObjectLegalHold": "read",
    "GetObjectTagging": "read",
    "ListParts": "list",
    "PutObject": "write",
    "CopyObject": "copy",
    "CreateMultipartUpload": "upload",
    "UploadPart": "upload",
    "UploadPartCopy": "upload",
    "CompleteMultipartUpload": "write",
    "AbortMultipartUpload": "upload",
    "PutObjectTagging": "setattr",
    "DeleteObjectTagging": "setattr",
    "DeleteObject": "delete",
    "DeleteObjects": "delete",
    "PutObjectRetention": "retention",
    "PutObjectLegalHold": "legal-hold",
    "RestoreObject": "restore",
    "GetBucketTagging": "read",
    "PutBucketTagging": "bucket-settings",
    "DeleteBucketTagging": "bucket-settings",
    "GetObjectAttributes": "head",
    "GetBucketCors": "read",
    "PutBucketCors": "bucket-settings",
    "DeleteBucketCors": "bucket-settings",
    "GetBucketAcl": "read-acl",
    "PutBucketAcl": "write-acl",
    "GetObjectAcl": "read-acl",
    "PutObjectAcl": "write-acl",
    "GetBucketPolicy": "read",
    "PutBucketPolicy": "bucket-settings",
    "DeleteBucketPolicy": "bucket-settings",
    "GetBucketPolicyStatus": "read",
    "GetPublicAccessBlock": "read",
    "PutPublicAccessBlock": "bucket-settings",
    "DeletePublicAccessBlock": "bucket-settings",
}


def lock_arguments(req: S3Request) -> dict[str, Any]:
    """The lock a write's headers ask for, as the engine's rights check names it (the mode for policy conditions)."""
    retention = {"mode": req.headers[MODE_HEADER]} if MODE_HEADER in req.headers else None
    return {"retention": retention, "legal_hold": req.headers.get(HOLD_HEADER) == "ON"}


async def authorize(req: S3Request) -> None:
    """Ask the engine whether ``req``'s operation is allowed; S3 AccessDenied (audited) if not.

    Cheap when allowed (the engine's decision is pure); only a refusal goes
    to a worker thread, for its durable audit line. An operation missing
    from :data:`ACTIONS` is refused by the engine as an unknown action.
    """
    store: Store = req.store
    action = ACTIONS.get(req.operation, req.operation)
    first: dict[str, Any] = lock_arguments(req)
    if action == "list":
        first["prefix"] = req.query.get("prefix", "")
    checks: list[tuple[str, str | None, str | None, dict[str, Any]]] = [(action, req.bucket, req.key, first)]
    if "x-amz-copy-source" in req.headers and req.operation in COPY_OPERATIONS:
        src_bucket, src_key, _ = decode_copy_source(req.headers["x-amz-copy-source"])
        checks.append(("read", src_bucket, src_key, {}))
    for checked, bucket, key, arguments in checks:
        # The bucket's policy and ACLs are in the index: one read, off the event loop.
        denial = functools.partial(store.access_denial, req.principal, checked, bucket, key, **arguments)
        if await req.engine.run(denial) is not None:
            await req.engine.run(functools.partial(store.authorize, req.principal, checked, bucket, key, **arguments))


def principal_of(
    key: AccessKey | None, *, source_ip: str = "", secure_transport: bool = False, request_id: str = ""
) -> Principal:
    """The engine's principal for a key (None: an anonymous request): its name, account, rights, and where it came from."""
    if key is None:
        principal = Principal.anonymous_request(source_ip=source_ip, secure_transport=secure_transport)
    else:
        principal = Principal.of_key(key, "s3", source_ip=source_ip, secure_transport=secure_transport)
    return dataclasses.replace(principal, request_id=request_id) if request_id else principal
