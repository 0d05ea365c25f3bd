"""Background work of an appliance, run by ``objfs serve``: one package, one loop per job.

Every loop calls the engine in worker threads under the serving process's
capacity limiter, survives a failing pass (logged, retried next interval)
and holds no state of its own: the work lists live in the index (heal
queue, gc entries), so a restart loses nothing. ``objfs scrub`` (a systemd
timer) and ``objfs gc`` run the same engine passes from the command line.

- heal: rewrites fragments that reads found missing or corrupt;
- gc: deletes retired versions' fragments once the trust model allows it
  (see docs/trust-model.md): old enough, unread, unlocked;
- lifecycle: one pass of the bucket rules every ``[lifecycle]
  interval_seconds`` (tier moves at ``max_bytes_per_second``, expirations),
  at most LIFECYCLE_BATCH actions a pass; its cursor is in the index, so the
  next pass (or the next process) resumes where this one stopped;
- replicate: sends the replication queue to the remotes (:mod:`.replicate`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from objfs.store import Store

log = logging.getLogger("objfs.workers")

HEAL_INTERVAL = 30.0
GC_INTERVAL = 60.0
LIFECYCLE_BATCH = 1000


async def _every(
    seconds: float, name: str, limiter: trio.CapacityLimiter, work: Callable[[], Any], report: Callable[[Any], None]
) -> None:
    while True:
        await trio.sleep(seconds)
        try:
            result = await trio.to_thread.run_sync(work, limiter=limiter)
            report(result)
        except Exception:  # noqa: BLE001 - a pass that fails is retried, the loop outlives it
            log.exception("%s pass failed", name)


def _heal_report(report: Any) -> None:
    if report.fragments_repaired or report.lost:
        log.info("healed %d fragments; %d objects beyond repair", report.fragments_repaired, len(report.lost))


def _gc_report(report: Any) -> None:
    if report.collected or report.locked:
        log.info("gc: collected %d blobs; %d refused (locked)", report.collected, report.locked)


def _lifecycle_report(report: Any) -> None:
    if report.moved or report.expired or report.aborted or report.failed:
        log.info(
            "lifecycle: %d moved, %d expired, %d uploads aborted, %d failed",
            len(report.moved),
            len(report.expired),
            len(report.aborted),
            len(report.failed),
        )


def start(nursery: trio.Nursery, store: Store, limiter: trio.CapacityLimiter) -> None:
    """Start every background loop in ``nursery`` (they run until it is cancelled)."""
    nursery.start_soon(_every, HEAL_INTERVAL, "heal", limiter, store.process_heal_queue, _heal_report)
    nursery.start_soon(_every, GC_INTERVAL, "gc", limiter, store.collect_garbage, _gc_report)
    nursery.start_soon(
        _every,
        store.config.lifecycle.interval_seconds,
        "lifecycle",
        limiter,
        lambda: store.run_lifecycle(max_actions=LIFECYCLE_BATCH),
        _lifecycle_report,
    )
    from . import replicate

    nursery.start_soon(replicate.run, store, trio.CapacityLimiter(1))
