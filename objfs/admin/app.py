"""The admin ASGI app: ``/healthz``, ``/readyz``, ``/metrics`` and the dashboard at ``/`` (:mod:`.dashboard`).

* ``/healthz``: 200 while the process answers at all (liveness).
* ``/readyz``: 200 only when every front ``objfs serve`` started is up and
  every tier has at least k+1 writable drives (so a write still has a spare
  drive beyond the minimum); 503 otherwise, with every reason, as JSON.
* ``/metrics``: Prometheus text format: the request series of the fronts
  (:mod:`.meter`) and the store's state (:mod:`.metrics`), collected in a
  worker thread.

:func:`serve_admin` runs it on Hypercorn (trio) in the current trio run, as
``objfs serve`` does. Health, readiness and metrics need no credentials
(a scraper and a service manager call them): keep the port on loopback or
a management network; they show counts and states, never object names.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from objfs.httpserve import serve_asgi
from objfs.store import Store

from . import dashboard, meter
from .history import IngestHistory
from .metrics import StoreCollector

_OCTAL = re.compile(r"\\([0-7]{3})")  # /proc/self/mounts writes a space as \040


class Fronts:
    """The fronts ``objfs serve`` started and how to tell each is up.

    A front is ``expect``-ed before it starts (then it reads "starting") and
    ``watch``-ed once up, with a check returning None while it serves or why
    it does not.
    """

    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], str | None]] = {}

    def expect(self, name: str) -> None:
        self._checks[name] = lambda: "starting"

    def watch(self, name: str, check: Callable[[], str | None]) -> None:
        self._checks[name] = check

    def problems(self) -> dict[str, str | None]:
        """Each front and what is wrong with it (None: up)."""
        return {name: check() for name, check in self._checks.items()}


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point, from /proc/self/mounts (no stat: the FUSE server may be this process)."""
    target = str(path)
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 1 and _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[1]) == target:
                    return True
    except OSError:
        return False
    return False


def readiness(store: Store, fronts: Fronts | None) -> list[str]:
    """Why the appliance is not ready (empty: ready). Blocking: reads the drives."""
    reasons = []
    for name, problem in (fronts.problems() if fronts else {}).items():
        if problem:
            reasons.append(f"{name}: {problem}")
    for tier in store.config.tiers:
        if tier.is_remote:
            continue  # no drives of ours: writes never go there, the mover reaches it when it answers
        drives = store.drives[tier.name]
        writable = [d for d in drives if store.drive_state(d) == "ok"]
        if len(writable) < tier.k + 1:
            down = ", ".join(f"{d.drive_id} {store.drive_state(d)}" for d in drives if d not in writable)
            reasons.append(f"tier {tier.name}: {len(writable)} writable drives, at least {tier.k + 1} needed ({down})")
    return reasons


def create_app(store: Store, fronts: Fronts | None = None, history: IngestHistory | None = None) -> Starlette:
    """The admin app over an open ``store``; ``fronts`` (from ``objfs serve``) feed readiness.

    ``history`` keeps the ingest-rate samples, taken at each scrape of
    ``/metrics`` and each dashboard page (one per minute by default).
    """
    history = history if history is not None else IngestHistory()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, fronts))
    limiter = trio.CapacityLimiter(1)  # one scrape at a time reads the index and the drives

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        reasons = await trio.to_thread.run_sync(readiness, store, fronts, limiter=limiter)
        return JSONResponse({"ready": not reasons, "reasons": reasons}, status_code=503 if reasons else 200)

    def exposition() -> bytes:
        totals = store.counters.totals()
        history.sample(totals["objects"], totals["bytes"])
        return generate_latest(meter.REGISTRY) + generate_latest(registry)

    async def metrics(request: Request) -> Response:
        body = await trio.to_thread.run_sync(exposition, limiter=limiter)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    routes += dashboard.routes(store, fronts, limiter, history)
    return Starlette(routes=routes)


async def serve_admin(
    store: Store,
    host: str = "127.0.0.1",
    port: int = 9100,
    *,
    fronts: Fronts | None = None,
    shutdown_trigger: Callable[..., Awaitable[None]] | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the admin endpoint until cancelled or ``shutdown_trigger`` returns; ``task_status`` gets the addresses."""
    await serve_asgi(create_app(store, fronts), host, port, shutdown_trigger=shutdown_trigger, task_status=task_status)
