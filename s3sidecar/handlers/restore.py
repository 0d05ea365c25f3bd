"""RestoreObject (``POST /bucket/key?restore``) and the ``x-amz-restore`` header: S3's restore is objfs's promotion.

A version on a colder tier (warm, or a remote S3 archive) is brought back
to the first tier by the engine's mover (:meth:`objfs.store.Store.restore_version`
queues it; the moves loop of ``objfs serve`` does it). Guarantees: ``202
Accepted`` when the move is queued, ``409 RestoreAlreadyInProgress`` (as S3)
when it was queued already and has not been done yet, ``200 OK`` when the version is on the
first tier already; HEAD and GET show ``x-amz-restore: ongoing-request="true"``
while it is queued and ``ongoing-request="false", expiry-date="..."`` once
promoted (until the lifecycle rules may move it again). The request's Days
and tier are accepted and not used: how long a promoted version stays is the
store's ``[lifecycle] promoted_days``. Everything else (rights, what a
restore means) is the engine's; this module only translates.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from .. import errors as S3
from ..context import S3Request, empty_response
from ..xmlio import http_date, parse_xml

RESTORE_HEADER = "x-amz-restore"


async def restore_object(req: S3Request) -> Response:
    body = await req.small_body()
    if body.strip() and parse_xml(body).tag != "RestoreRequest":
        raise S3.MalformedXML()
    state = await req.engine.run(
        lambda: req.store.restore_version(req.bucket, req.key, req.version_id(), principal=req.principal)
    )
    if state == "ongoing":
        raise S3.RestoreAlreadyInProgress()
    return empty_response(200 if state == "hot" else 202)


def restore_headers(req: S3Request, record: dict[str, Any]) -> dict[str, str]:
    """``x-amz-restore`` of a HEAD or GET of ``record`` (none when no restore was asked or done)."""
    state = req.store.restore_state(record)
    if state is None:
        return {}
    ongoing, until = state
    if ongoing:
        return {RESTORE_HEADER: 'ongoing-request="true"'}
    return {RESTORE_HEADER: f'ongoing-request="false", expiry-date="{http_date(until)}"'}
