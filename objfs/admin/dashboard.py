"""The dashboard at ``/`` of the admin port: capacity per tier, drives, queues, fronts,
replication, recent events (the audit log's tail) and an ingest-rate chart (inline SVG).

One server-rendered HTML page (no script, no external resource: it works
offline and passes any content-security policy), refreshed by the browser
every 15 seconds. Login is HTTP Basic with a store key (access key : secret
key); only an enabled key over every bucket may see it (a key scoped to
some buckets is refused with 403), secrets are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from html import escape
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from objfs.store import Store

from .history import IngestHistory, ingest_chart, recent_events
from .metrics import audit_length

CHALLENGE = {"WWW-Authenticate": 'Basic realm="objfs admin", charset="UTF-8"'}
STYLE = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #bbb;padding:.3em .7em;text-align:left}th{background:#eee}.bad{color:#b00;font-weight:bold}
.ok{color:#070}"""


def login(store: Store, authorization: str | None) -> str | None:
    """Why the credentials do not open the dashboard (None: they do). Blocking: reads the keys file."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return "credentials required"
    try:
        access, sep, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "malformed credentials"
    key = store.access_key(access) if sep else None
    if key is None or not hmac.compare_digest(key.secret_key.encode(), secret.encode()) or key.disabled:
        return "invalid credentials"
    if key.buckets:
        return "forbidden"
    return None


def _size(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


#: Each tier's colour in the capacity bars, in objfs.toml's order (the hot tier first).
TIER_COLOURS = ("#2a6fdb", "#d9822b", "#8e44ad", "#16a085")
FREE_COLOUR = "#dddddd"
BAR_WIDTH, BAR_HEIGHT = 160, 14


def capacity_bar(tier: dict[str, Any], index: int) -> str:
    """An inline SVG bar: the tier's used share of its usable capacity in its colour, the rest grey."""
    total = tier.get("usable_bytes") or 0
    used = max(total - (tier.get("usable_free_bytes") or 0), 0)
    width = 0 if not total else max(round(BAR_WIDTH * used / total), 2 if used else 0)
    colour = TIER_COLOURS[index % len(TIER_COLOURS)]
    share = f"{100 * used / total:.0f}% used" if total else "no capacity"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{BAR_WIDTH}" height="{BAR_HEIGHT}" role="img" '
        f'aria-label="{escape(tier["name"])}: {share}"><rect width="{BAR_WIDTH}" height="{BAR_HEIGHT}" fill="{FREE_COLOUR}"/>'
        f'<rect width="{width}" height="{BAR_HEIGHT}" fill="{colour}"/></svg> {share}'
    )


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _state(text: str, ok: bool) -> str:
    return f'<span class="{"ok" if ok else "bad"}">{escape(text)}</span>'


def _events(events: list[dict[str, Any]]) -> str:
    rows = []
    for e in events:
        target = "/".join(str(e[k]) for k in ("bucket", "key") if e.get(k))
        outcome = str(e.get("outcome", ""))
        rows.append(
            [
                escape(str(e.get("t", ""))),
                escape(str(e.get("who", ""))),
                escape(str(e.get("action", ""))),
                escape(target or str(e.get("detail", ""))),
                _state(outcome, outcome == "ok"),
                escape(str(e.get("ip", ""))),
            ]
        )
    return _table(["time (UTC)", "who", "action", "target", "outcome", "client"], rows) if rows else "<p>No events yet.</p>"


def replication_section(used: dict[str, list[str]], backlog: dict[str, Any] | None) -> str:
    """The remotes buckets replicate to, and what waits to be sent."""
    if not used:
        return "<p>No remotes configured.</p>"
    remotes = _table(["remote", "buckets"], [[escape(name), escape(", ".join(sorted(b)))] for name, b in sorted(used.items())])
    if backlog is None:
        return remotes
    failures = len(backlog.get("failures", []))
    summary = _table(
        ["backlog", "backlog size", "lag", "sending", "failing"],
        [
            [
                backlog["backlog_objects"],
                _size(backlog["backlog_bytes"]),
                f"{backlog['lag_seconds']:.0f} s",
                f"{_size(backlog['rate_bytes_per_second'])}/s",
                _state(str(failures), failures == 0),
            ]
        ],
    )
    return remotes + summary


def render(
    status: dict[str, Any],
    audit: int,
    reasons: list[str],
    fronts: dict[str, str | None],
    events: list[dict[str, Any]] | None = None,
    chart: str = "",
    replication: str = "<p>No remotes configured.</p>",
) -> str:
    """The page for one snapshot of the store's status."""
    tiers = _table(
        ["tier", "EC", "drives ok", "usable", "usable free", "used", "redundancy left"],
        [
            [
                escape(t["name"]),
                t["ec"],
                f"{t['drives_ok']} / {t['drives']}",
                _size(t["usable_bytes"]),
                _size(t["usable_free_bytes"]),
                capacity_bar(t, i),
                _state(str(t["redundancy_left"]), t["redundancy_left"] == t["m"]),
            ]
            for i, t in enumerate(status["tiers"])
        ],
    )
    drives = _table(
        ["drive", "tier", "state", "free", "size", "path"],
        [
            [
                escape(d["id"]),
                escape(d["tier"]),
                _state(d["state"], d["state"] == "ok"),
                _size(d["free"]) if "free" in d else "-",
                _size(d["total"]) if "total" in d else "-",
                escape(d["path"]),
            ]
            for d in status["drives"]
        ],
    )
    queues = _table(
        ["heal queue", "GC queue", "multipart uploads", "lost objects"],
        [[status["heal_queue"], status["gc_queue"], status["multipart_uploads"], status["lost_objects"]]],
    )
    contents = _table(
        ["buckets", "objects", "noncurrent versions", "stored", "audit chain"],
        [[status["buckets"], status["objects"], status["noncurrent_versions"], _size(status["bytes"]), f"{audit} lines"]],
    )
    front_rows = [[escape(name), _state(problem or "up", problem is None)] for name, problem in fronts.items()]
    ready = _state("ready", True) if not reasons else _state("NOT READY: " + "; ".join(reasons), False)
    degraded = "".join(f"<li>{escape(r)}</li>" for r in status["degraded"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="15">
<title>objfs: {escape(status["store"])}</title><style>{STYLE}</style></head>
<body><h1>objfs</h1><p>Store {escape(status["store"])} (format {status["format"]}): {ready}</p>
{f"<h2>Degraded</h2><ul>{degraded}</ul>" if degraded else ""}
<h2>Capacity per tier</h2>{tiers}<h2>Drives</h2>{drives}<h2>Queues</h2>{queues}
<h2>Contents</h2>{contents}<h2>Ingest rate (last hour)</h2>{chart}
<h2>Fronts</h2>{_table(["front", "state"], front_rows)}
<h2>Replication</h2>{replication}
<h2>Recent events</h2>{_events(events or [])}
</body></html>"""


def routes(store: Store, fronts: Any, limiter: trio.CapacityLimiter, history: IngestHistory | None = None) -> list[Route]:
    """The dashboard's routes over ``store`` (``fronts``: the Fronts of objfs serve, or None)."""
    from .app import readiness

    history = history if history is not None else IngestHistory()

    def snapshot() -> str:
        status = store.status()
        history.sample(status["objects"], status["bytes"])
        return render(
            status,
            audit_length(store),
            readiness(store, fronts),
            fronts.problems() if fronts else {},
            recent_events(store.audit),
            ingest_chart(history.rates()),
            replication(),
        )

    def replication() -> str:
        used = store.remotes_in_use() if hasattr(store, "remotes_in_use") else {}
        return replication_section(used, store.replication_backlog() if used else None)

    async def page(request: Request) -> Response:
        refused = await trio.to_thread.run_sync(login, store, request.headers.get("authorization"))
        if refused == "forbidden":
            return PlainTextResponse("this key is limited to some buckets; the dashboard needs a store-wide key\n", 403)
        if refused:
            return PlainTextResponse(refused + "\n", 401, headers=CHALLENGE)
        html = await trio.to_thread.run_sync(snapshot, limiter=limiter)
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    return [Route("/", page)]
