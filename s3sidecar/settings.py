"""Tunables of the S3 sidecar, shared by every worker process.

Worker processes are spawned by Hypercorn and build the app from an import
string, so the settings travel in an environment variable
(:data:`SETTINGS_ENV`) as JSON; :meth:`Settings.from_env` reads them back.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

STORE_ENV = "OBJFS_S3_STORE"
SETTINGS_ENV = "OBJFS_S3_SETTINGS"

GiB = 1 << 30
MiB = 1 << 20
KiB = 1 << 10


@dataclass(frozen=True)
class Settings:
    """Limits and addressing of one sidecar.

    Every limit answers with an S3 error rather than failing the process:
    ``max_requests`` and ``max_authenticating`` -> 503 SlowDown,
    ``max_object_size`` -> EntityTooLarge, ``max_header_bytes`` ->
    RequestHeaderSectionTooLarge, ``body_timeout`` and ``body_min_rate`` ->
    RequestTimeout.
    """

    region: str = "us-east-1"
    #: Host names under which ``bucket.<domain>`` selects a bucket (virtual-host style).
    domains: tuple[str, ...] = ("s3.localhost", "localhost")
    #: Largest single PUT or part body (S3 allows 5 GiB).
    max_object_size: int = 5 * GiB
    #: Admitted requests (signed, authorised, size-checked) in flight per
    #: worker; more are refused with SlowDown. Only admitted requests hold one.
    max_requests: int = 256
    #: Requests per worker still being authenticated (their own bound, so
    #: unsigned clients never compete with signed ones for request slots).
    max_authenticating: int = 1024
    #: Seconds a connection may take to send a complete header section (and
    #: stay idle between requests): Hypercorn's keep-alive timeout.
    header_timeout: float = 20.0
    #: Engine threads for short calls (HEAD, GET segments, listings, commits).
    engine_threads: int = 16
    #: Engine threads for uploads: they wait on the network, so they get their own pool.
    upload_threads: int = 32
    #: Header section size checked by the app; Hypercorn's h11 limit sits above it.
    max_header_bytes: int = 16 * KiB
    #: User metadata (``x-amz-meta-*``) size, as S3: 2 KiB.
    max_metadata_bytes: int = 2 * KiB
    #: Request XML documents (DeleteObjects, CompleteMultipartUpload, tagging).
    max_xml_bytes: int = 2 * MiB
    #: Allowed difference between the request's signing time and ours.
    clock_skew: int = 15 * 60
    #: Objects up to this size are read in one engine call (one thread hop).
    inline_get_bytes: int = 1 * MiB
    #: Seconds a client may stay silent while sending a body.
    body_timeout: float = 60.0
    #: Slowest average body rate (bytes/s) accepted, counted over the time
    #: spent waiting for the client only, after ``body_rate_grace`` seconds of it.
    body_min_rate: int = 1024
    body_rate_grace: float = 10.0
    #: After refusing a request before reading its body, at most this much of
    #: a body already on its way is read and dropped (so the client gets the
    #: answer rather than a reset) before the connection closes.
    refuse_linger_bytes: int = 256 * KiB
    refuse_linger_seconds: float = 2.0
    extra: dict[str, str] = field(default_factory=dict)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Settings:
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            return cls()
        data = json.loads(raw)
        data["domains"] = tuple(data.get("domains", ()))
        return cls(**data)
