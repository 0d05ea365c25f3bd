"""Remote S3 tiers: a version's blobs kept as objects in a bucket of another S3 system.

A remote tier (``[[tiers]]`` with ``remote``, ``bucket`` and ``prefix``; see
``objfs tier add --s3``) names a remote defined with ``objfs remote add``
(:mod:`.remotes`). Each blob of a version moved there becomes one object
``PREFIX STORE-ID/xx/BLOB-ID`` holding the blob's bytes *as stored*: the
plaintext of an unencrypted version, and for an SSE-S3/SSE-KMS version the
sequence of its AES-256-GCM sealed segments (under the version's own data
key, which never leaves the store): the remote never sees plaintext of an
encrypted object.

Guarantees:

* **upload, then verify, before the switch**: :func:`upload_blob` streams the
  bytes (bounded memory: one upload part at a time) with a Content-MD5 per
  request, then HEADs the object and compares its length and ETag with the
  MD5 (or multipart ETag) computed here; any difference is DataLoss and the
  version stays where it was (the upload is deleted again when the remote
  allows it);
* **WORM is never weakened**: a locked version (retention or legal hold) is
  uploaded with the same ObjectLockMode/RetainUntilDate/LegalHold, and only
  to a bucket with object lock enabled (:class:`RemoteLockUnsupported`
  otherwise, nothing uploaded);
* **reads stream**: :class:`RemoteBlobReader` reads with range GETs, one
  segment (or one read chunk) in memory at a time, nothing staged on disk;
  any failure is DataLoss (never short or wrong bytes: sealed segments are
  authenticated, plaintext lengths are checked);
* **deletes go through gc**: :func:`delete_remote_blob` is called by the
  collector only, under the trust model (minimum age, leases, locks).

A remote blob's descriptor has ``remote``, ``bucket``, ``rkey``,
``rversion`` (the remote's version id, when its bucket keeps versions),
``rsize`` (bytes on the remote), ``etag``, ``seg``/``nseg``/``enc`` (the
sealed-segment layout) and ``drives: []``; the version's metadata (its
manifest) goes to the first tier's drives, so ``rebuild-index`` from the
drives alone restores it.
"""

from __future__ import annotations

import base64
import datetime
import errno
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .blobs import BlobReader, new_id
from .crypto import TAG_BYTES, SegmentCipher
from .errors import DataLoss, EncryptionKeyRequired, InvalidArgument, StoreError
from .locks import lock_active
from .remotes import RemoteError, load_remote

if TYPE_CHECKING:
    from .config import TierConfig
    from .engine import Store

log = logging.getLogger(__name__)

#: Bytes per upload request; parts of a multipart upload (S3's minimum part is 5 MiB).
UPLOAD_PART = 8 << 20
#: Bytes a streaming read takes from the response body at a time.
READ_CHUNK = 1 << 20
LOCK_CHECK_SECONDS = 60.0


class RemoteLockUnsupported(InvalidArgument):
    """A locked version cannot go to a remote bucket without object lock (WORM would be weakened)."""


class RemoteUnavailable(StoreError):
    """The remote did not answer as expected; nothing was switched."""


def is_remote(desc: dict[str, Any]) -> bool:
    """Whether a blob descriptor names an object on a remote tier."""
    return bool(desc.get("remote"))


def open_blob(store: Store, desc: dict[str, Any], *, data_key: bytes | None = None) -> Any:
    """A reader of one blob wherever it lives (local drives or a remote tier); same interface."""
    if is_remote(desc):
        return RemoteBlobReader(store, desc, data_key=data_key)
    return BlobReader(store, desc, data_key=data_key)


class _Clients:
    """One boto3 client per remote per process (boto3 clients are thread-safe), and object-lock facts."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.clients: dict[str, Any] = {}
        self.lock_enabled: dict[tuple[str, str], tuple[float, bool]] = {}

    def client(self, remote: str) -> Any:
        with self.lock:
            client = self.clients.get(remote)
            if client is None:
                try:
                    client = self.clients[remote] = load_remote(self.store.root, remote).client()
                except RemoteError as exc:
                    raise RemoteUnavailable(str(exc)) from None
            return client


_CLIENTS_LOCK = threading.Lock()


def clients(store: Store) -> _Clients:
    """The process's remote clients of ``store`` (created on first use)."""
    with _CLIENTS_LOCK:
        found = store.__dict__.get("_remote_clients")
        if found is None:
            found = store.__dict__["_remote_clients"] = _Clients(store)
        return found


def remote_lock_enabled(store: Store, remote: str, bucket: str) -> bool:
    """Whether ``bucket`` on ``remote`` has object lock enabled (asked at most once a minute)."""
    pool = clients(store)
    now = time.monotonic()
    cached = pool.lock_enabled.get((remote, bucket))
    if cached is not None and now - cached[0] < LOCK_CHECK_SECONDS:
        return cached[1]
    client = pool.client(remote)
    try:
        answer = client.get_object_lock_configuration(Bucket=bucket)
        enabled = (answer.get("ObjectLockConfiguration") or {}).get("ObjectLockEnabled") == "Enabled"
    except Exception as exc:  # noqa: BLE001 - botocore: any refusal means "not known to be enabled"
        code = _error_code(exc)
        if code is None:
            raise RemoteUnavailable(f"remote {remote}: {exc}") from None
        enabled = False
    pool.lock_enabled[(remote, bucket)] = (now, enabled)
    return enabled


def check_remote_tier(root: Any, tier: TierConfig) -> dict[str, Any]:
    """Reach the tier's bucket; its versioning and object-lock state (for ``tier add --s3``)."""
    try:
        client = load_remote(root, tier.remote).client()
    except RemoteError as exc:
        raise RemoteUnavailable(str(exc)) from None
    try:
        client.head_bucket(Bucket=tier.bucket)
        versioning = client.get_bucket_versioning(Bucket=tier.bucket).get("Status", "")
    except Exception as exc:  # noqa: BLE001 - botocore errors are reported as they are
        raise RemoteUnavailable(f"remote {tier.remote} bucket {tier.bucket}: {exc}") from None
    try:
        answer = client.get_object_lock_configuration(Bucket=tier.bucket)
        lock = (answer.get("ObjectLockConfiguration") or {}).get("ObjectLockEnabled") == "Enabled"
    except Exception:  # noqa: BLE001 - no configuration (or no support): no object lock
        lock = False
    return {"versioning": versioning or "Disabled", "object_lock": lock}


#: Seconds ``objfs status`` waits for a remote tier's bucket to answer.
PROBE_TIMEOUT = 2.0


def probe_remote_tier(store: Store, tier: TierConfig, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """The tier as ``objfs status`` shows it: remote, endpoint, bucket, prefix, and whether it answers now (one HEAD)."""
    facts: dict[str, Any] = {"remote": tier.remote, "bucket": tier.bucket, "prefix": tier.prefix, "endpoint": ""}
    try:
        remote = load_remote(store.root, tier.remote)
        facts["endpoint"] = remote.endpoint
        remote.client(connect_timeout=timeout, read_timeout=timeout, attempts=1).head_bucket(Bucket=tier.bucket)
    except Exception as exc:  # noqa: BLE001 - any failure is "unreachable", with its reason
        return dict(facts, reachable=False, problem=str(exc).splitlines()[0][:200])
    return dict(facts, reachable=True, problem=None)


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    return None


def remote_key(tier: TierConfig, store_id: str, blob_id: str) -> str:
    prefix = tier.prefix if not tier.prefix or tier.prefix.endswith("/") else tier.prefix + "/"
    return f"{prefix}{store_id}/{blob_id[:2]}/{blob_id}"


def lock_arguments(store: Store, tier: TierConfig, record: dict[str, Any]) -> dict[str, Any]:
    """The object-lock arguments of a PUT of a version's blob; refuses a locked version on a bucket without lock."""
    if not lock_active(record, store.clock.now()):
        return {}
    if not remote_lock_enabled(store, tier.remote, tier.bucket):
        raise RemoteLockUnsupported(
            f"{record['bucket']}/{record['key']} is locked and bucket {tier.bucket} of remote {tier.remote} "
            "has no object lock: moving it there would weaken its WORM protection"
        )
    args: dict[str, Any] = {}
    retention = record.get("retention")
    if retention and retention["until"] > store.clock.now():
        args["ObjectLockMode"] = retention["mode"]
        args["ObjectLockRetainUntilDate"] = datetime.datetime.fromtimestamp(float(retention["until"]), datetime.UTC)
    if record.get("legal_hold"):
        args["ObjectLockLegalHoldStatus"] = "ON"
    return args


def _sealed(chunks: Iterable[bytes], segment_size: int, cipher: SegmentCipher | None) -> Iterator[bytes]:
    """Plaintext chunks re-cut into segments, each sealed when there is a cipher (the bytes as stored)."""
    buffer = bytearray()
    number = 0
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= segment_size:
            segment = bytes(buffer[:segment_size])
            del buffer[:segment_size]
            yield cipher.seal(number, segment) if cipher else segment
            number += 1
    if buffer:
        yield cipher.seal(number, bytes(buffer)) if cipher else bytes(buffer)


def upload_blob(
    store: Store,
    tier: TierConfig,
    chunks: Iterable[bytes],
    size: int,
    record: dict[str, Any],
    *,
    data_key: bytes | None,
    throttle: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Upload one blob's bytes (``size`` plaintext bytes from ``chunks``) to ``tier``, verified; its descriptor.

    Raises RemoteLockUnsupported before anything is sent when the version is
    locked and the bucket has no object lock, DataLoss when the remote's copy
    is not the bytes sent, RemoteUnavailable when the remote fails.
    """
    lock_args = lock_arguments(store, tier, record)
    client = clients(store).client(tier.remote)
    blob_id = new_id()
    key = remote_key(tier, store.config.store_id, blob_id)
    seg = store.config.segment_size
    cipher = SegmentCipher(data_key, blob_id) if data_key is not None else None
    whole = hashlib.md5()
    part_md5s: list[bytes] = []
    parts: list[dict[str, Any]] = []
    buffer = bytearray()
    upload_id = None
    plain = 0
    sent = 0

    def send_part(data: bytes) -> None:
        nonlocal upload_id
        if upload_id is None:
            upload_id = client.create_multipart_upload(Bucket=tier.bucket, Key=key, **lock_args)["UploadId"]
        digest = hashlib.md5(data).digest()
        number = len(parts) + 1
        answer = client.upload_part(
            Bucket=tier.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ContentMD5=base64.b64encode(digest).decode(),
        )
        part_md5s.append(digest)
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    try:
        for sealed in _sealed(_counted(chunks, throttle), seg, cipher):
            plain += len(sealed) - (TAG_BYTES if cipher else 0)
            whole.update(sealed)
            sent += len(sealed)
            buffer += sealed
            if len(buffer) >= UPLOAD_PART:
                send_part(bytes(buffer))
                buffer.clear()
        if plain != size:
            raise DataLoss(f"{record['bucket']}/{record['key']}: read {plain} of {size} bytes for the remote tier")
        if upload_id is None:
            answer = client.put_object(
                Bucket=tier.bucket,
                Key=key,
                Body=bytes(buffer),
                ContentMD5=base64.b64encode(whole.digest()).decode(),
                **lock_args,
            )
            expected = whole.hexdigest()
        else:
            if buffer:
                send_part(bytes(buffer))
            answer = client.complete_multipart_upload(
                Bucket=tier.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            expected = f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"
        version = answer.get("VersionId") or ""
        head = client.head_object(Bucket=tier.bucket, Key=key, **({"VersionId": version} if version else {}))
    except (DataLoss, StoreError):
        _abandon(client, tier, key, upload_id)
        raise
    except Exception as exc:  # noqa: BLE001 - botocore and connection errors: nothing switched
        _abandon(client, tier, key, upload_id)
        raise RemoteUnavailable(f"remote {tier.remote}: upload of {record['bucket']}/{record['key']} failed: {exc}") from None
    etag = str(head.get("ETag", "")).strip('"')
    if head.get("ContentLength") != sent or etag != expected:
        _abandon(client, tier, key, None, version)
        raise DataLoss(
            f"remote {tier.remote} holds {head.get('ContentLength')} bytes with ETag {etag} for {key}; "
            f"{sent} bytes with ETag {expected} were sent: not moved"
        )
    desc = {
        "id": blob_id,
        "tier": tier.name,
        "size": size,
        "remote": tier.remote,
        "bucket": tier.bucket,
        "rkey": key,
        "rversion": version,
        "rsize": sent,
        "etag": etag,
        "seg": seg,
        "nseg": -(-size // seg) if size else 0,
        "drives": [],
    }
    if cipher is not None:
        desc["enc"] = TAG_BYTES
    if lock_args:
        desc["locked"] = True
    return desc


def _counted(chunks: Iterable[bytes], throttle: Callable[[int], None] | None) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk
        if throttle is not None:
            throttle(len(chunk))


def _abandon(client: Any, tier: TierConfig, key: str, upload_id: str | None, version: str = "") -> None:
    """Remove what an upload that will not be switched left on the remote (best effort: a locked one stays)."""
    try:
        if upload_id is not None:
            client.abort_multipart_upload(Bucket=tier.bucket, Key=key, UploadId=upload_id)
        else:
            client.delete_object(Bucket=tier.bucket, Key=key, **({"VersionId": version} if version else {}))
    except Exception as exc:  # noqa: BLE001 - the version stays where it was; the remote keeps an orphan
        log.info("remote %s: could not remove the abandoned upload %s: %s", tier.remote, key, exc)


def delete_remote_blob(store: Store, desc: dict[str, Any], *, bypass: bool) -> bool:
    """Delete a collected blob's object (its version, when the remote keeps versions); True once it is gone."""
    try:
        client = clients(store).client(desc["remote"])
        args: dict[str, Any] = {"Bucket": desc["bucket"], "Key": desc["rkey"]}
        if desc.get("rversion"):
            args["VersionId"] = desc["rversion"]
        if bypass and desc.get("locked"):  # uploaded under object lock: GOVERNANCE needs the bypass
            args["BypassGovernanceRetention"] = True
        client.delete_object(**args)
        return True
    except Exception as exc:  # noqa: BLE001 - the gc entry stays for the next pass
        if _error_code(exc) in ("NoSuchKey", "NoSuchVersion", "404"):
            return True
        if desc.get("locked") and _error_code(exc) == "AccessDenied":
            # Uploaded under object lock: the remote keeps it until its retention ends, as it must.
            log.info("remote %s: %s stays until its lock there ends", desc.get("remote"), desc.get("rkey"))
            return False
        log.warning("remote %s: %s not deleted yet: %s", desc.get("remote"), desc.get("rkey"), exc)
        return False


class RemoteBlobReader:
    """Reads of one remote blob with range GETs; the interface of :class:`~.blobs.BlobReader`."""

    def __init__(self, store: Store, desc: dict[str, Any], *, data_key: bytes | None = None) -> None:
        self.store = store
        self.desc = desc
        self.bad: set[int] = set()  # nothing to heal here: the remote keeps its own redundancy
        enc = desc.get("enc", 0)
        if enc and data_key is None:
            raise EncryptionKeyRequired(f"blob {desc['id']} is encrypted and no key was given")
        self.cipher = SegmentCipher(data_key, desc["id"]) if enc else None
        self.enc = enc

    def _client(self) -> Any:
        try:
            return clients(self.store).client(self.desc["remote"])
        except RemoteUnavailable as exc:
            raise DataLoss(str(exc)) from None

    def _get(self, first: int, last: int) -> Any:
        """The streaming body of remote bytes ``[first, last]`` (inclusive, as HTTP ranges are)."""
        args: dict[str, Any] = {"Bucket": self.desc["bucket"], "Key": self.desc["rkey"], "Range": f"bytes={first}-{last}"}
        if self.desc.get("rversion"):
            args["VersionId"] = self.desc["rversion"]
        try:
            answer = self._client().get_object(**args)
        except Exception as exc:  # noqa: BLE001 - any failure of the remote is a failed read
            raise DataLoss(f"remote {self.desc['remote']}: {self.desc['rkey']} bytes {first}-{last}: {exc}") from None
        if answer.get("ContentLength") != last - first + 1:
            answer["Body"].close()
            raise DataLoss(f"remote {self.desc['remote']}: {self.desc['rkey']} answered a short range")
        return answer["Body"]

    @staticmethod
    def _read_exact(body: Any, n: int, what: str) -> bytes:
        out = bytearray()
        try:
            while len(out) < n:
                chunk = body.read(n - len(out))
                if not chunk:
                    break
                out += chunk
        except Exception as exc:  # noqa: BLE001 - a connection cut mid-body
            raise DataLoss(f"{what}: the remote stream failed: {exc}") from None
        if len(out) != n:
            raise DataLoss(f"{what}: the remote stream ended {n - len(out)} bytes short")
        return bytes(out)

    def segment_length(self, segment: int) -> int:
        seg = self.desc["seg"]
        return min(seg, self.desc["size"] - segment * seg)

    def read_piece(self, segment: int, offset: int, size: int = 1, *, nowait: bool = False) -> tuple[int, bytes]:
        """``(0, segment)``: a remote blob has no fragments to read a share of, so a small read takes its segment.

        ``nowait`` raises :class:`BlockingIOError` at once: a remote read always waits for the network.
        """
        if nowait:
            raise BlockingIOError(errno.EAGAIN, "a remote tier's blob is read in a worker")
        return 0, self.read_segment(segment)

    def read_segment(self, segment: int) -> bytes:
        """The plaintext of one segment (one range GET)."""
        if self.desc["size"] == 0:
            return b""
        seg, length = self.desc["seg"], self.segment_length(segment)
        stored = seg + self.enc
        first = segment * stored
        body = self._get(first, first + length + self.enc - 1)
        try:
            data = self._read_exact(body, length + self.enc, self.desc["rkey"])
        finally:
            body.close()
        return self.cipher.open(segment, data) if self.cipher else data

    def iter_range(self, start: int, end: int, prefetch: bool = True) -> Iterator[bytes]:
        """Yield plaintext bytes ``[start, end)`` from one streaming range GET (one chunk in memory at a time)."""
        if end <= start:
            return
        seg = self.desc["seg"]
        what = self.desc["rkey"]
        if not self.cipher:
            body = self._get(start, end - 1)
            try:
                left = end - start
                while left:
                    chunk = self._read_exact(body, min(READ_CHUNK, left), what)
                    left -= len(chunk)
                    yield chunk
            finally:
                body.close()
            return
        first, last = start // seg, (end - 1) // seg
        stored = seg + self.enc
        stop = last * stored + self.segment_length(last) + self.enc
        body = self._get(first * stored, stop - 1)
        try:
            for segment in range(first, last + 1):
                data = self.cipher.open(segment, self._read_exact(body, self.segment_length(segment) + self.enc, what))
                lo = start - segment * seg if segment == first else 0
                hi = end - segment * seg if segment == last else len(data)
                yield data[lo:hi] if (lo, hi) != (0, len(data)) else data
        finally:
            body.close()

    def close(self) -> None:
        pass


def sync_remote_lock(store: Store, old: dict[str, Any], new: dict[str, Any], *, bypass: bool) -> list[dict[str, Any]]:
    """Before a lock change of a version commits: the same change on each of its objects on a remote tier.

    ``new["parts"]`` is replaced by copies marked ``locked`` where the remote
    now holds a lock. Raises RemoteLockUnsupported when the version would be
    locked on a bucket without object lock (nothing changed there), and
    RemoteUnavailable when the remote refuses or does not answer (the objects
    changed so far are put back to ``old``'s lock, best effort). Returns the
    descriptors changed, for :func:`restore_remote_lock` should the local
    commit fail.
    """
    now = store.clock.now()
    wants_lock = lock_active(new, now)
    changed: list[dict[str, Any]] = []
    parts = [dict(d) for d in new.get("parts") or []]
    for desc in parts:
        if not is_remote(desc) or (not desc.get("locked") and not wants_lock):
            continue  # nothing locked there and nothing to lock
        if not remote_lock_enabled(store, desc["remote"], desc["bucket"]):
            if wants_lock:
                raise RemoteLockUnsupported(
                    f"{new['bucket']}/{new['key']} is on bucket {desc['bucket']} of remote {desc['remote']}, "
                    "which has no object lock: promote it to the first tier before locking it"
                )
            continue
        try:
            _put_lock(store, desc, old, new, bypass=bypass)
        except Exception as exc:  # noqa: BLE001 - botocore errors: the local change is refused
            restore_remote_lock(store, changed, new, old)
            raise RemoteUnavailable(
                f"remote {desc['remote']}: the lock of {new['bucket']}/{new['key']} could not be changed there: {exc}"
            ) from None
        changed.append(desc)
        desc["locked"] = True
    new["parts"] = parts
    return changed


def restore_remote_lock(store: Store, descs: list[dict[str, Any]], applied: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Put ``wanted``'s lock back on remote objects that took ``applied``'s (a local commit that failed); best effort."""
    for desc in descs:
        try:
            _put_lock(store, desc, applied, wanted, bypass=True)
        except Exception as exc:  # noqa: BLE001 - logged loudly: the remote may now differ from the index
            log.error("remote %s: the lock of %s could not be put back: %s", desc["remote"], desc["rkey"], exc)


def _put_lock(store: Store, desc: dict[str, Any], old: dict[str, Any], new: dict[str, Any], *, bypass: bool) -> None:
    client = clients(store).client(desc["remote"])
    target: dict[str, Any] = {"Bucket": desc["bucket"], "Key": desc["rkey"]}
    if desc.get("rversion"):
        target["VersionId"] = desc["rversion"]
    now = store.clock.now()
    retention = new.get("retention")
    if retention != old.get("retention"):
        if retention and retention["until"] > now:
            until = datetime.datetime.fromtimestamp(float(retention["until"]), datetime.UTC)
            client.put_object_retention(
                **target,
                Retention={"Mode": retention["mode"], "RetainUntilDate": until},
                **({"BypassGovernanceRetention": True} if bypass else {}),
            )
        elif (old.get("retention") or {}).get("until", 0) > now:  # removed (a governance bypass, checked locally)
            client.put_object_retention(**target, Retention={}, BypassGovernanceRetention=True)
    if bool(new.get("legal_hold")) != bool(old.get("legal_hold")):
        client.put_object_legal_hold(**target, LegalHold={"Status": "ON" if new.get("legal_hold") else "OFF"})


def sweep_remote_orphans(store: Store, *, min_age: float, delete: bool) -> dict[str, Any]:
    """Objects under this store's prefix on each remote tier that nothing references; deleted when ``delete``.

    An orphan is left by a mover that died after its upload and before the
    switch (or whose clean-up failed). The remote is listed *before* the
    index is read, so an object listed here and switched in meanwhile is
    found referenced; an upload not switched yet is younger than
    ``min_age`` (``[gc] min_age_seconds``) and kept. An orphan under object
    lock (retention or legal hold) is kept and counted. The caller passes
    ``delete`` False when the index may be incomplete (scrub's index trust):
    then orphans are only counted.
    """
    report: dict[str, Any] = {"orphans": 0, "deleted": 0, "young": 0, "locked": 0, "errors": []}
    listed: list[tuple[str, str, dict[str, Any]]] = []
    seen: set[tuple[str, str, str]] = set()
    for tier in store.config.tiers:
        if not tier.is_remote or (tier.remote, tier.bucket, tier.prefix) in seen:
            continue
        seen.add((tier.remote, tier.bucket, tier.prefix))
        prefix = remote_key(tier, store.config.store_id, "")[:-1]  # PREFIX STORE-ID/ (the blob id's "xx/" cut)
        try:
            pages = clients(store).client(tier.remote).get_paginator("list_object_versions")
            for page in pages.paginate(Bucket=tier.bucket, Prefix=prefix):
                listed += [(tier.remote, tier.bucket, v) for v in page.get("Versions") or []]
        except Exception as exc:  # noqa: BLE001 - this tier is swept on the next pass
            report["errors"].append(f"remote {tier.remote} bucket {tier.bucket}: {exc}")
    if not listed:
        return report
    referenced = set()
    for db in ("objects", "versions"):
        for record in store._scan_batches(db):
            referenced.update(d["rkey"] for d in record.get("parts") or [] if is_remote(d))
    for entry in store._scan_batches("gc"):
        if is_remote(entry["blob"]):
            referenced.add(entry["blob"]["rkey"])
    now = time.time()
    for remote, bucket, version in listed:
        if version["Key"] in referenced:
            continue
        report["orphans"] += 1
        if now - version["LastModified"].timestamp() < min_age:
            report["young"] += 1
            continue
        target = {"Bucket": bucket, "Key": version["Key"]}
        if version.get("VersionId") not in (None, "", "null"):
            target["VersionId"] = version["VersionId"]
        try:
            client = clients(store).client(remote)
            if remote_lock_enabled(store, remote, bucket) and _remote_locked(client.head_object(**target), now):
                report["locked"] += 1
                continue
            if delete:
                client.delete_object(**target)
                report["deleted"] += 1
                log.info("remote %s: deleted %s, referenced by no version (an upload never switched)", remote, version["Key"])
        except Exception as exc:  # noqa: BLE001 - kept for the next pass
            report["errors"].append(f"remote {remote}: {version['Key']}: {exc}")
    return report


def _remote_locked(head: dict[str, Any], now: float) -> bool:
    until = head.get("ObjectLockRetainUntilDate")
    return head.get("ObjectLockLegalHoldStatus") == "ON" or (until is not None and until.timestamp() > now)
