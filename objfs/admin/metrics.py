"""The store's state as Prometheus metric families, read at scrape time.

Drive state (one sample per possible state, 1 for the current one) and free
and total bytes per drive; per tier usable capacity and redundancy left;
heal and GC queue lengths, objects, versions and bytes (from
``Store.status()``); the audit chain's length (its pinned head); and whether
each front of ``objfs serve`` is up. Collected in a worker thread (the
drives and the index are read), never on the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from objfs.store import Store
from objfs.store.audit import HEAD_NAME

#: Every state a drive can be in (objfs.store.drives), exported as an enum.
DRIVE_STATES = ("ok", "missing", "foreign", "wiped", "read-only", "full")


def audit_length(store: Store) -> int:
    """The sequence number of the audit chain's newest line (0: none written yet)."""
    try:
        return int(json.loads((store.audit.directory / HEAD_NAME).read_text())["seq"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


class StoreCollector(Collector):
    """Metric families for one open store and, when given, the fronts of ``objfs serve``."""

    def __init__(self, store: Store, fronts: Any = None) -> None:
        self.store = store
        self.fronts = fronts

    def describe(self) -> list:  # no fixed description: nothing is collected at registration
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self.store.status()
        state = GaugeMetricFamily("objfs_drive_state", "1 for the drive's current state", labels=("tier", "drive", "state"))
        free = GaugeMetricFamily("objfs_drive_free_bytes", "Free bytes of the drive's filesystem", labels=("tier", "drive"))
        total = GaugeMetricFamily("objfs_drive_size_bytes", "Size of the drive's filesystem", labels=("tier", "drive"))
        for drive in status["drives"]:
            for name in DRIVE_STATES:
                state.add_metric((drive["tier"], drive["id"], name), 1.0 if drive["state"] == name else 0.0)
            if "free" in drive:
                free.add_metric((drive["tier"], drive["id"]), drive["free"])
                total.add_metric((drive["tier"], drive["id"]), drive["total"])
        yield from (state, free, total)
        tiers = {
            "objfs_tier_usable_bytes": ("usable_bytes", "Usable capacity of the tier (raw times k/(k+m))"),
            "objfs_tier_usable_free_bytes": ("usable_free_bytes", "Usable free capacity of the tier"),
            "objfs_tier_redundancy_left": ("redundancy_left", "Drives the tier can still lose before data is unreadable"),
            "objfs_tier_drives_ok": ("drives_ok", "Drives of the tier in state ok"),
        }
        for metric, (field, text) in tiers.items():
            family = GaugeMetricFamily(metric, text, labels=("tier",))
            for tier in status["tiers"]:
                family.add_metric((tier["name"],), tier[field])
            yield family
        plain = {
            "objfs_heal_queue": ("heal_queue", "Objects waiting to be healed"),
            "objfs_gc_queue": ("gc_queue", "Retired versions waiting for the garbage collector"),
            "objfs_lost_objects": ("lost_objects", "Objects beyond repair"),
            "objfs_objects": ("objects", "Current objects"),
            "objfs_noncurrent_versions": ("noncurrent_versions", "Noncurrent versions kept"),
            "objfs_stored_bytes": ("bytes", "Bytes of all objects and versions (before erasure coding)"),
            "objfs_buckets": ("buckets", "Buckets"),
            "objfs_multipart_uploads": ("multipart_uploads", "Multipart uploads in progress"),
        }
        for metric, (field, text) in plain.items():
            yield GaugeMetricFamily(metric, text, value=status[field])
        yield GaugeMetricFamily("objfs_degraded", "1 when the store is not whole", value=1.0 if status["degraded"] else 0.0)
        yield GaugeMetricFamily("objfs_audit_chain_length", "Lines in the audit chain", value=audit_length(self.store))
        if self.fronts is not None:
            up = GaugeMetricFamily("objfs_front_up", "1 while the front serves", labels=("front",))
            for name, problem in self.fronts.problems().items():
                up.add_metric((name,), 0.0 if problem else 1.0)
            yield up
