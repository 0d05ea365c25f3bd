"""The replication sender of ``objfs serve``: drains the queue to the remotes, in order, with retries.

Guarantees:

* **Nothing lost, nothing doubled.** An entry leaves the queue only after
  the destination acknowledged it (one index transaction removes it and
  marks the version COMPLETED). A sender killed mid-send sends the entry
  again after the restart; an objfs destination holds each version id once
  (:mod:`objfs.store.replicas`), so the second send is a no-op there.
* **Order per key.** The queue hands out a key's changes one at a time, in
  commit order (:meth:`Store.replication_due`).
* **Never blocks writes.** The sender runs in its own thread, reads versions
  under reader leases like any reader, and takes no lock a write waits on.
* **Bounded.** A dead or slow destination leaves entries in the queue on
  disk (their retries back off, per entry and per remote); the sender holds
  one batch of entry headers and a segment per parallel send in memory.
  ``[replication] max_bytes_per_second`` caps what it sends, all remotes
  together.

Destinations: an objfs appliance (its HeadBucket answers
``x-objfs-appliance``) gets replica writes keeping version ids, delete
markers and later tag/retention/legal-hold changes (``x-objfs-replica``,
:mod:`s3sidecar.handlers.replication`); any other S3 system gets ordinary
PutObject (version ids are its own), DeleteObject for delete markers and
PutObjectTagging for tag changes.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import trio

from objfs.store import Store
from objfs.store.remotes import RemoteError, load_remote
from objfs.store.replicas import descriptor_of

log = logging.getLogger("objfs.workers.replicate")

REPLICA_HEADER = "x-objfs-replica"
APPLIANCE_HEADER = "x-objfs-appliance"
BATCH = 64
#: Entries (of distinct keys) sent at once.
PARALLEL = 4
#: Longest a remote that cannot be reached is left alone before the next try.
REMOTE_BACKOFF_MAX = 5.0


@dataclass
class SendReport:
    sent: int = 0
    sent_bytes: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class TokenBucket:
    """At most ``rate`` bytes per second on average, bursts of one second (0: unlimited)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        if not self.rate or n <= 0:
            return
        with self.lock:
            now = time.monotonic()
            self.tokens = min(float(self.rate), self.tokens + (now - self.stamp) * self.rate) - n
            self.stamp = now
            debt = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if debt > 0:
            time.sleep(debt)


class VersionFile(io.RawIOBase):
    """A seekable file over one version's bytes (boto3 reads and rewinds it to sign and send)."""

    def __init__(self, reader: Any, size: int) -> None:
        self.reader = reader
        self.size = size
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, min(self.size, base + offset))
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        n = min(n, self.size - self.pos, 1 << 20)
        if n <= 0:
            return b""
        data = self.reader.read(self.pos, n)
        self.pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _encode(desc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(desc, separators=(",", ":")).encode()).decode("ascii").rstrip("=")


def _unreachable(exc: BaseException) -> bool:
    """Whether the remote could not be reached at all (connection refused, timeout): wait for it, do not count."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    if isinstance(exc, (BotoConnectionError, EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        return True
    code = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode") if hasattr(exc, "response") else None
    return code in (500, 502, 503, 504)


def _reason(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return f"{err.get('Code')}: {err.get('Message')}"
    return f"{type(exc).__name__}: {exc}"


class Sender:
    """Sends the queue of one store; one per serving process, used from one thread at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.throttle = TokenBucket(store.config.replication.max_bytes_per_second)
        self.clients: dict[str, Any] = {}
        self.kinds: dict[str, str] = {}
        self.remote_wait: dict[str, tuple[float, float]] = {}  # remote -> (until, last backoff)
        self._local = threading.local()  # the replica header of the request this thread is sending
        self.principal = store.system_principal("replication")

    def client(self, name: str) -> Any:
        if name not in self.clients:
            client = load_remote(self.store.root, name).client()
            client.meta.events.register("before-sign.s3.PutObject", self._add_header)
            self.clients[name] = client
        return self.clients[name]

    def _add_header(self, request: Any, **_: Any) -> None:
        header = getattr(self._local, "header", None)
        if header is not None:
            request.headers[REPLICA_HEADER] = header

    def kind(self, name: str, bucket: str) -> str:
        """ "objfs" when the destination is an objfs appliance (it keeps version ids), else "s3"."""
        if name not in self.kinds:
            response = self.client(name).head_bucket(Bucket=bucket)
            headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            self.kinds[name] = "objfs" if APPLIANCE_HEADER in headers else "s3"
        return self.kinds[name]

    def run_pass(self, limit: int = BATCH) -> SendReport:
        """Send what is due now (one entry per key, up to PARALLEL at once); returns what happened."""
        report = SendReport()
        due = []
        for seq, entry in self.store.replication_due(limit=limit):
            until, _ = self.remote_wait.get(entry["remote"], (0.0, 0.0))
            if until <= time.monotonic():
                due.append((seq, entry))
        if not due:
            return report
        if len(self.clients) < len({e["remote"] for _, e in due}):
            for _, entry in due:  # clients are made here, once: building one is not thread-safe
                try:
                    self.client(entry["remote"])
                except RemoteError:
                    pass
        with ThreadPoolExecutor(max_workers=min(PARALLEL, len(due)), thread_name_prefix="objfs-replicate") as pool:
            outcomes = list(pool.map(self._try_send, due))
        now = time.time()
        backed_off: set[str] = set()
        for (seq, entry), (sent, exc) in zip(due, outcomes):
            remote = entry["remote"]
            if exc is None:
                self.remote_wait.pop(remote, None)
                self.store.replication_done(seq, entry, sent_bytes=sent)
                report.sent += 1
                report.sent_bytes += sent
                continue
            report.failed += 1
            reason = _reason(exc)
            report.errors.append(f"{entry['bucket']}/{entry['key']} -> {remote}: {reason}")
            if isinstance(exc, RemoteError) or _unreachable(exc):
                if remote not in backed_off:  # one step per pass, however many sends failed
                    backed_off.add(remote)
                    _, last = self.remote_wait.get(remote, (0.0, 0.25))
                    wait = min(REMOTE_BACKOFF_MAX, last * 2)
                    self.remote_wait[remote] = (time.monotonic() + wait, wait)
                wait = self.remote_wait[remote][1]
                self.kinds.pop(remote, None)
                self.store.replication_failed(seq, entry, reason, retry_at=now + wait)
            else:
                self.store.replication_failed(seq, entry, reason)
        return report

    def _try_send(self, item: tuple[int, dict[str, Any]]) -> tuple[int, BaseException | None]:
        try:
            return self.send(item[1]), None
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on its entry and retried
            return 0, exc

    def send(self, entry: dict[str, Any]) -> int:
        """Send one entry; returns the body bytes sent. Raises on any failure."""
        record = self.store.replication_record(entry)
        if record is None:
            return 0  # deleted by id since: nothing to send (a version deletion is not replicated)
        client = self.client(entry["remote"])
        bucket, key = entry["to"], entry["key"]
        objfs = self.kind(entry["remote"], bucket) == "objfs"
        op = entry["op"]
        if op == "marker":
            if objfs:
                self._put(client, bucket, key, b"", 0, dict(descriptor_of(record), op="marker"))
            else:
                client.delete_object(Bucket=bucket, Key=key)
            return 0
        if op == "update":
            if objfs:
                desc = {k: v for k, v in descriptor_of(record).items() if k in ("version", "tags", "retention", "legal_hold")}
                self._put(client, bucket, key, b"", 0, dict(desc, op="update"))
            else:
                tags = [{"Key": k, "Value": v} for k, v in (record.get("tags") or {}).items()]
                client.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": tags})
            return 0
        size = record["size"]
        self.throttle.take(size)
        with self.store.open_record(record, principal=self.principal) as reader:
            body = VersionFile(reader, size)
            if objfs:
                self._put(client, bucket, key, body, size, dict(descriptor_of(record), op="put"))
            else:
                client.put_object(Bucket=bucket, Key=key, Body=body, ContentLength=size, **_plain_args(record))
        return size

    def _put(self, client: Any, bucket: str, key: str, body: Any, size: int, desc: dict[str, Any]) -> None:
        self._local.header = _encode(desc)
        try:
            response = client.put_object(Bucket=bucket, Key=key, Body=body, ContentLength=size)
        finally:
            self._local.header = None
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        if REPLICA_HEADER not in headers:
            raise RuntimeError(f"{bucket}: the destination did not take the replica write (not objfs?)")


def _plain_args(record: dict[str, Any]) -> dict[str, Any]:
    """PutObject arguments carrying a version's attributes to an S3 system that is not objfs."""
    args: dict[str, Any] = {"ContentType": record.get("ctype") or "application/octet-stream"}
    meta = {k: v for k, v in (record.get("meta") or {}).items() if v.isascii()}
    if meta:
        args["Metadata"] = meta
    if record.get("tags"):
        args["Tagging"] = urllib.parse.urlencode(record["tags"])
    retention = record.get("retention")
    if retention and retention["until"] > time.time():
        import datetime

        args["ObjectLockMode"] = retention["mode"]
        args["ObjectLockRetainUntilDate"] = datetime.datetime.fromtimestamp(retention["until"], datetime.UTC)
    if record.get("legal_hold"):
        args["ObjectLockLegalHoldStatus"] = "ON"
    return args


async def run(store: Store, limiter: trio.CapacityLimiter) -> None:
    """The sender loop of ``objfs serve``: passes back to back while there is work, else every interval."""
    sender = Sender(store)
    seen = store.config
    while True:
        if store.config is not seen:  # objfs.toml reloaded (SIGHUP): new limits, remotes re-read
            seen = store.config
            sender.throttle = TokenBucket(seen.replication.max_bytes_per_second)
            sender.clients.clear()
            sender.kinds.clear()
            sender.remote_wait.clear()
            log.info("replication: settings reloaded (%s)", seen.replication)
        idle = seen.replication.interval_seconds
        try:
            report = await trio.to_thread.run_sync(sender.run_pass, limiter=limiter)
        except Exception:  # noqa: BLE001 - a pass that fails is retried, the loop outlives it
            log.exception("replication pass failed")
            report = SendReport()
        if report.failed:
            log.info("replication: %d sent, %d failed (first: %s)", report.sent, report.failed, report.errors[0])
        await trio.sleep(0 if report.sent else idle)
