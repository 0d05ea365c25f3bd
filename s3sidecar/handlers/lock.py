"""Object lock (WORM) as S3 defines it: the bucket's default retention, each version's
retention and legal hold, and the ``x-amz-object-lock-*`` headers of writes and reads.

The WORM rules and the rights to change locks live in the engine
(:mod:`objfs.store.retention`, :mod:`objfs.store.access`) and hold for every
front; this module only translates (it never reads the engine's clock:
whether a date is in the future is the engine's decision). Guarantees:

* A lock header or lock subresource on a bucket created without object lock
  is ``InvalidRequest`` ("Bucket is missing Object Lock Configuration"),
  checked before any byte of a body is stored.
* ``x-amz-bypass-governance-retention: true`` is passed to the engine as a
  request only; it takes effect for keys holding the bypass permission
  (``objfs key create --bypass-governance``) and never for COMPLIANCE.
* Lock headers on a write, ``?retention`` and ``?legal-hold`` need the
  key's ``retention`` / ``legal-hold`` rights (``objfs key create
  --retention --legal-hold``), asked of the engine before the body is read.
* The engine's ``ObjectLocked`` leaves as ``AccessDenied`` (403), as AWS
  answers a change to a locked version (see :data:`s3sidecar.bridge.ENGINE_ERRORS`).
* Every change passes ``principal=req.principal`` so the audit trail names
  the S3 key; refusals are audited whoever asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from objfs.store import RETENTION_MODES, ObjectInfo, Store

from .. import errors as S3
from ..context import S3Request, empty_response, xml_response
from ..xmlio import build, http_date, iso8601, parse_iso8601, parse_legal_hold, parse_object_lock_config, parse_retention

MODE_HEADER = "x-amz-object-lock-mode"
UNTIL_HEADER = "x-amz-object-lock-retain-until-date"
HOLD_HEADER = "x-amz-object-lock-legal-hold"
MISSING_LOCK = "Bucket is missing Object Lock Configuration"


@dataclass(frozen=True)
class LockHeaders:
    """The object-lock headers of a write (PutObject, CreateMultipartUpload, CopyObject)."""

    retention: dict[str, Any] | None = None  # {"mode", "until"} as the engine takes it
    legal_hold: bool = False
    present: bool = False  # any lock header at all, even "legal-hold: OFF"

    def engine_args(self) -> dict[str, Any]:
        """Keyword arguments for ``put_object`` / ``create_multipart`` / ``copy_object``."""
        return {"retention": self.retention, "legal_hold": self.legal_hold}


def lock_headers_of(req: S3Request) -> LockHeaders:
    """Parse the lock headers of a write, with AWS's errors.

    Mode and date come together or not at all; the date is ISO 8601 (the
    engine refuses one that is not in the future); the legal hold is ``ON``
    or ``OFF``.
    """
    mode = req.headers.get(MODE_HEADER)
    until_text = req.headers.get(UNTIL_HEADER)
    hold_text = req.headers.get(HOLD_HEADER)
    retention = None
    if (mode is None) != (until_text is None):
        raise S3.InvalidArgument(
            "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied",
            ArgumentName=MODE_HEADER if mode is None else UNTIL_HEADER,
        )
    if mode is not None and until_text is not None:
        if mode not in RETENTION_MODES:
            raise S3.InvalidArgument("Unknown wormMode directive.", ArgumentName=MODE_HEADER, ArgumentValue=mode)
        try:
            until = parse_iso8601(until_text)
        except S3.MalformedXML:
            raise S3.InvalidArgument(
                "The retain until date must be provided in ISO 8601 format", ArgumentName=UNTIL_HEADER, ArgumentValue=until_text
            ) from None
        retention = {"mode": mode, "until": until}
    if hold_text is not None and hold_text not in ("ON", "OFF"):
        raise S3.InvalidArgument("Legal Hold must be either of 'ON' or 'OFF'", ArgumentName=HOLD_HEADER, ArgumentValue=hold_text)
    present = mode is not None or until_text is not None or hold_text is not None
    return LockHeaders(retention, hold_text == "ON", present)


def require_object_lock(store: Store, bucket: str) -> dict[str, Any]:
    """In a worker thread: the bucket's settings if it was created with object lock, else InvalidRequest."""
    settings = store.head_bucket(bucket)
    if not settings.get("object_lock"):
        raise S3.InvalidRequest(MISSING_LOCK)
    return settings


def response_lock_headers(info: ObjectInfo) -> dict[str, str]:
    """What GET and HEAD tell about a version's lock.

    The retention is reported as stored, also after it ended (AWS does the
    same); a legal hold only while it is on, because the engine does not
    remember whether one was ever set.
    """
    out: dict[str, str] = {}
    if info.retention:
        out[MODE_HEADER] = info.retention["mode"]
        out[UNTIL_HEADER] = iso8601(info.retention["until"])
    if info.legal_hold:
        out[HOLD_HEADER] = "ON"
    return out


def refuse_delete_marker(info: ObjectInfo) -> ObjectInfo:
    """``info`` unless it is a delete marker named by version id, which S3 answers with 405."""
    if info.delete_marker:
        raise S3.MethodNotAllowed(
            headers={
                "x-amz-delete-marker": "true",
                "x-amz-version-id": info.version_id,
                "last-modified": http_date(info.modified),
                "allow": "DELETE",
            }
        )
    return info


def _target_version(req: S3Request, store: Store) -> ObjectInfo:
    """In a worker thread: the version a retention / legal-hold request names, in a lock bucket."""
    require_object_lock(store, req.bucket)
    return refuse_delete_marker(store.head_object(req.bucket, req.key, req.version_id()))


# -- bucket: ?object-lock ------------------------------------------------------


async def get_lock_configuration(req: S3Request) -> Response:
    settings = await req.engine.run(req.store.head_bucket, req.bucket)
    if not settings.get("object_lock"):
        raise S3.ObjectLockConfigurationNotFoundError(BucketName=req.bucket)
    default = settings.get("lock_default")
    rule = None
    if default:
        rule = {"DefaultRetention": {"Mode": default["mode"], "Days": default.get("days"), "Years": default.get("years")}}
    return xml_response(build("ObjectLockConfiguration", {"ObjectLockEnabled": "Enabled", "Rule": rule}))


async def put_lock_configuration(req: S3Request) -> Response:
    config = parse_object_lock_config(await req.small_body())
    if not config["enabled"]:
        # Object lock cannot be switched off; a configuration must say Enabled.
        raise S3.MalformedXML()
    store: Store = req.store

    def apply() -> None:
        if not store.head_bucket(req.bucket).get("object_lock"):
            # The engine enables object lock only at creation (versioning and
            # on-drive retention must hold for every version from the start).
            raise S3.InvalidBucketState("Object Lock configuration cannot be enabled on existing buckets")
        store.put_lock_configuration(
            req.bucket, config["mode"], days=config["days"], years=config["years"], principal=req.principal
        )

    await req.engine.run(apply)
    return empty_response(200)


# -- object: ?retention, ?legal-hold ------------------------------------------------


async def get_retention(req: S3Request) -> Response:
    info = await req.engine.run(_target_version, req, req.store)
    if not info.retention:
        raise S3.NoSuchObjectLockConfiguration()
    body = build("Retention", {"Mode": info.retention["mode"], "RetainUntilDate": iso8601(info.retention["until"])})
    return xml_response(body)


async def put_retention(req: S3Request) -> Response:
    # A date in the past is refused by the engine (InvalidArgument), by its own clock.
    parsed = parse_retention(await req.small_body())
    bypass = req.bypass_governance()
    store: Store = req.store

    def apply() -> None:
        info = _target_version(req, store)
        store.set_retention(
            req.bucket,
            req.key,
            parsed["mode"],
            parsed["until"],
            version_id=info.version_id,
            principal=req.principal,
            bypass_governance=bypass,
        )

    await req.engine.run(apply)
    return empty_response(200)


async def get_legal_hold(req: S3Request) -> Response:
    info = await req.engine.run(_target_version, req, req.store)
    return xml_response(build("LegalHold", {"Status": "ON" if info.legal_hold else "OFF"}))


async def put_legal_hold(req: S3Request) -> Response:
    on = parse_legal_hold(await req.small_body())
    store: Store = req.store

    def apply() -> None:
        info = _target_version(req, store)
        store.set_legal_hold(req.bucket, req.key, on, version_id=info.version_id, principal=req.principal)

    await req.engine.run(apply)
    return empty_response(200)
