"""Get/Put/DeleteBucketReplication and the replica writes another appliance sends here.

The engine keeps the rules and decides everything
(:mod:`objfs.store.replication`); this module translates S3's XML:

* ``Destination/Bucket`` is ``arn:aws:s3:::BUCKET`` (a bare name is taken too);
* the remote (``objfs remote add``) the rule sends to is named by
  ``Destination/Account``; without it, by the last path segment of the
  configuration's ``Role`` (``arn:aws:iam::ACCOUNT:role/REMOTE``). On AWS
  these name an account and an IAM role; objfs has remotes instead.
* ``Filter/Prefix`` (or the older ``Prefix``), ``Status``,
  ``DeleteMarkerReplication/Status``; ``Priority`` and the rest are kept
  out (one rule per destination, its first match).

Guarantees: a document that does not parse is ``MalformedXML``; a bucket
without versioning, or a rule naming no known remote, is ``InvalidRequest``;
a bucket without rules answers ``ReplicationConfigurationNotFoundError``.

A replica write is a PutObject carrying ``x-objfs-replica`` (base64url
JSON, :func:`objfs.store.replicas.descriptor_of`): only a key holding the
``replication`` right may send one (AccessDenied otherwise, before the
body is read). ``"op": "marker"`` writes a delete marker, ``"op": "update"``
applies tags, retention and legal hold to a replica already here.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from starlette.responses import Response

from .. import errors as S3
from ..context import S3Request, empty_response, xml_response
from ..xmlio import build, find_all, find_text, parse_xml

REPLICA_HEADER = "x-objfs-replica"
STATUS_HEADER = "x-amz-replication-status"
ARN_PREFIX = "arn:aws:s3:::"


def _remote_of_role(role: str | None) -> str:
    return (role or "").rsplit("/", 1)[-1].strip() if role and "/" in role else ""


def parse_replication(body: bytes) -> dict[str, Any]:
    """A ReplicationConfiguration document as the engine's rules."""
    root = parse_xml(body)
    if root.tag != "ReplicationConfiguration":
        raise S3.MalformedXML()
    role_remote = _remote_of_role(find_text(root, "Role", strip=True))
    rules = []
    for elem in find_all(root, "Rule"):
        dest = next((c for c in elem if c.tag == "Destination"), None)
        if dest is None:
            raise S3.MalformedXML()
        bucket = (find_text(dest, "Bucket", "", strip=True) or "").removeprefix(ARN_PREFIX)
        remote = find_text(dest, "Account", "", strip=True) or role_remote
        prefix = find_text(elem, "Filter/Prefix")
        if prefix is None:
            prefix = find_text(elem, "Filter/And/Prefix")
        if prefix is None:
            prefix = find_text(elem, "Prefix", "")
        rules.append(
            {
                "id": find_text(elem, "ID", "", strip=True) or None,
                "status": find_text(elem, "Status", "Enabled", strip=True),
                "prefix": prefix or "",
                "remote": remote,
                "bucket": bucket,
                "delete_markers": find_text(elem, "DeleteMarkerReplication/Status", "", strip=True) == "Enabled",
            }
        )
    if not rules:
        raise S3.MalformedXML()
    return {"rules": rules}


def render_replication(config: dict[str, Any]) -> bytes:
    rules = config["rules"]
    items: list[tuple[str, Any]] = [("Role", f"arn:aws:iam::objfs:role/{rules[0]['remote']}")]
    for priority, rule in enumerate(rules, 1):
        items.append(
            (
                "Rule",
                [
                    ("ID", rule["id"]),
                    ("Priority", priority),
                    ("Status", rule["status"]),
                    ("Filter", [("Prefix", rule["prefix"])]),
                    ("DeleteMarkerReplication", [("Status", "Enabled" if rule["delete_markers"] else "Disabled")]),
                    ("Destination", [("Bucket", ARN_PREFIX + rule["bucket"]), ("Account", rule["remote"])]),
                ],
            )
        )
    return build("ReplicationConfiguration", items)


async def get_replication(req: S3Request) -> Response:
    config = await req.engine.run(lambda: req.store.get_replication(req.bucket, principal=req.principal))
    if not config:
        raise S3.ReplicationConfigurationNotFoundError(BucketName=req.bucket)
    return xml_response(render_replication(config))


async def put_replication(req: S3Request) -> Response:
    config = parse_replication(await req.small_body())
    await req.engine.run(lambda: req.store.put_replication(req.bucket, config, principal=req.principal))
    return empty_response(200)


async def delete_replication(req: S3Request) -> Response:
    await req.engine.run(lambda: req.store.put_replication(req.bucket, None, principal=req.principal))
    return empty_response(204)


# -- replica writes -------------------------------------------------------------------------


def replica_descriptor(req: S3Request) -> dict[str, Any] | None:
    """The ``x-objfs-replica`` descriptor of a PutObject, or None for an ordinary write."""
    raw = req.headers.get(REPLICA_HEADER)
    if raw is None:
        return None
    try:
        desc = json.loads(base64.urlsafe_b64decode(raw.encode("ascii") + b"=" * (-len(raw) % 4)))
    except (ValueError, UnicodeError):
        raise S3.InvalidArgument("x-objfs-replica is not base64url JSON", ArgumentName=REPLICA_HEADER) from None
    if not isinstance(desc, dict) or not isinstance(desc.get("version"), str):
        raise S3.InvalidArgument("x-objfs-replica names no version", ArgumentName=REPLICA_HEADER)
    return desc


def encode_descriptor(desc: dict[str, Any]) -> str:
    """The header value for a descriptor (the sender's side)."""
    return base64.urlsafe_b64encode(json.dumps(desc, separators=(",", ":")).encode()).decode("ascii").rstrip("=")


async def put_replica(req: S3Request, desc: dict[str, Any]) -> Response:
    """A replica write (see the module docstring); answers the version id it holds."""
    await req.engine.run(lambda: req.store.authorize(req.principal, "replicate", req.bucket, req.key))
    if desc.get("op") == "update":
        await req.small_body()
        info = await req.engine.run(lambda: req.store.update_replica(req.bucket, req.key, desc, principal=req.principal))
        fresh = True
    else:
        body, payload, length = req.stream_body()

        def verify() -> None:
            body.finish()

        def put() -> Any:
            return req.store.put_replica(req.bucket, req.key, body, desc, length=length, principal=req.principal, verify=verify)

        info, fresh = await req.engine.run_upload(put)
    headers = {"x-amz-version-id": info.version_id, REPLICA_HEADER: "stored" if fresh else "held"}
    if not info.delete_marker:
        headers["etag"] = '"' + info.etag + '"'
    return empty_response(200, headers)


def status_headers(req: S3Request, record: dict[str, Any]) -> dict[str, str]:
    """``x-amz-replication-status`` of a HEAD or GET, when the version has one."""
    status = req.store.replication_status(record)
    return {STATUS_HEADER: status} if status else {}
