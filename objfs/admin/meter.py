"""Requests of the fronts, counted and logged: Prometheus series and the access log.

A front wraps each request in a :class:`RequestMeter` (one call) and tells it
what the request was (:meth:`RequestMeter.note`) once it knows. When the
request ends, :meth:`RequestMeter.finished`:

* counts it in :data:`REGISTRY` (requests by front, operation and status,
  latency histogram by front and operation, bytes in and out), which the
  admin endpoint's ``/metrics`` exposes;
* writes one access-log line to the ``objfs.access`` logger (INFO): client
  IP, principal (the key that signed, even when the signature was refused,
  so failed logins leave a trace), operation, bucket/key, status, bytes in
  and out, latency in ms and request id. Values a client chose (key names,
  access keys) are JSON-quoted, so a newline in a key cannot forge a line.

Counting never fails a request: it runs in ``finally`` and only adds numbers.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

access_log = logging.getLogger("objfs.access")

#: The request series of this process (the store's own series are added per scrape, see .metrics).
REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter(
    "objfs_requests",
    "Requests answered, by front, operation and HTTP status",
    ("front", "operation", "status"),
    registry=REGISTRY,
)
LATENCY = Histogram(
    "objfs_request_duration_seconds",
    "Time from a request's arrival to the end of its answer",
    ("front", "operation"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
BYTES_IN = Counter("objfs_request_bytes_in", "Request body bytes received", ("front", "operation"), registry=REGISTRY)
BYTES_OUT = Counter("objfs_request_bytes_out", "Response body bytes sent", ("front", "operation"), registry=REGISTRY)

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
_SAFE = re.compile(r"^[A-Za-z0-9._:@/+=-]*$")


def _quoted(value: str) -> str:
    return value if value and _SAFE.match(value) else json.dumps(value)


def claimed_key(headers: list[tuple[bytes, bytes]], query_string: bytes) -> str | None:
    """The access key a SigV4 request names (header or presigned URL), verified or not."""
    for name, value in headers:
        if name.lower() == b"authorization":
            found = _CREDENTIAL.search(value.decode("latin-1"))
            return found.group(1) if found else None
    found = re.search(r"X-Amz-Credential=([^%/&]+)", query_string.decode("latin-1"))
    return found.group(1) if found else None


class RequestMeter:
    """One request's counts: wraps the ASGI ``receive`` and ``send`` of the app."""

    def __init__(self, front: str, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable) -> None:
        self.front = front
        self.started = time.perf_counter()
        self.client = (scope.get("client") or ("-", 0))[0]
        self.principal = claimed_key(scope.get("headers", []), scope.get("query_string", b"")) or "-"
        self.operation = "-"
        self.resource = ""
        self.request_id = "-"
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._receive = receive
        self._send = send

    async def receive(self) -> Any:
        message = await self._receive()
        if message.get("type") == "http.request":
            self.bytes_in += len(message.get("body", b""))
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            for name, value in message.get("headers", ()):
                if name.lower() == b"x-amz-request-id":
                    self.request_id = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            self.bytes_out += len(message.get("body", b""))
        await self._send(message)

    def note(self, operation: str, bucket: str | None, key: str | None, principal: str | None = None) -> None:
        """What the request turned out to be (once routed and authenticated)."""
        self.operation = operation
        self.resource = "/".join(part for part in (bucket, key) if part)
        if principal:
            self.principal = principal

    def finished(self) -> None:
        """Count the request and write its access-log line."""
        seconds = time.perf_counter() - self.started
        labels = (self.front, self.operation)
        REQUESTS.labels(self.front, self.operation, str(self.status)).inc()
        LATENCY.labels(*labels).observe(seconds)
        BYTES_IN.labels(*labels).inc(self.bytes_in)
        BYTES_OUT.labels(*labels).inc(self.bytes_out)
        access_log.info(
            "%s client=%s principal=%s op=%s resource=%s status=%d in=%d out=%d ms=%.1f id=%s",
            self.front,
            self.client,
            _quoted(self.principal),
            self.operation,
            _quoted(self.resource),
            self.status,
            self.bytes_in,
            self.bytes_out,
            seconds * 1000,
            _quoted(self.request_id),
        )
