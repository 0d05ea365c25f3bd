"""The dashboard's recent events (the audit log's tail) and ingest rate (samples of the kept counters).

* :func:`recent_events` reads only the end of the audit log (and of the
  newest sealed segments when the live log has just been started), so the
  page costs the same with a log of a billion lines.
* :class:`IngestHistory` keeps one sample of the store's object and byte
  counts per ``step`` seconds for the last ``window`` seconds, taken
  whenever the dashboard or ``/metrics`` is served (Prometheus scrapes and
  the page's own refresh keep it fed); the rate is the difference between
  consecutive samples. The counters are kept, not scanned
  (:mod:`objfs.store.counters`), so sampling is cheap.
* :func:`ingest_chart` draws the series as inline SVG: no script, no
  external resource.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from html import escape
from pathlib import Path
from typing import Any

TAIL_BYTES = 64 << 10


def _tail_lines(path: Path, limit: int) -> list[dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - TAIL_BYTES))
            raw = f.read()
    except FileNotFoundError:
        return []
    lines = raw.split(b"\n")
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first may be cut
    out = []
    for line in lines[-limit - 1 :]:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out[-limit:]


def recent_events(audit: Any, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` audit lines, newest first (``audit``: the store's AuditLog)."""
    events: list[dict[str, Any]] = []
    for path in reversed(audit.segments()):  # the live log, then the newest segments while lines are missing
        events = _tail_lines(path, limit - len(events)) + events
        if len(events) >= limit:
            break
    return list(reversed(events))


class IngestHistory:
    """Samples of (time, objects, bytes), one per ``step`` seconds over ``window`` seconds. Thread-safe."""

    def __init__(self, *, step: float | None = None, window: float = 3600.0) -> None:
        if step is None:  # OBJFS_INGEST_STEP: a finer chart (and the screenshot test's seconds-long run)
            step = float(os.environ.get("OBJFS_INGEST_STEP", "60"))
        self.step = step
        self.points: deque[tuple[float, int, int]] = deque(maxlen=int(window / step) + 1)
        self._lock = threading.Lock()

    def sample(self, objects: int, stored: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            if not self.points or now - self.points[-1][0] >= self.step:
                self.points.append((now, objects, stored))

    def rates(self) -> list[tuple[float, float, float]]:
        """``(time, objects/s, bytes/s)`` between consecutive samples, oldest first (net: deletes count against)."""
        with self._lock:
            points = list(self.points)
        out = []
        for (t0, o0, b0), (t1, o1, b1) in zip(points, points[1:]):
            span = max(t1 - t0, 1e-9)
            out.append((t1, (o1 - o0) / span, (b1 - b0) / span))
        return out


def _rate(n: float) -> str:
    for unit in ("B/s", "KB/s", "MB/s", "GB/s"):
        if abs(n) < 1000 or unit == "GB/s":
            return f"{n:.0f} {unit}" if unit == "B/s" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB/s"


def ingest_chart(rates: list[tuple[float, float, float]], width: int = 600, height: int = 120) -> str:
    """Bytes stored per second over time as an SVG bar chart (one bar per sample interval)."""
    if not rates:
        return "<p>Ingest rate: collecting (one sample per minute; the chart appears after the second).</p>"
    peak = max(max(r[2] for r in rates), 1.0)
    bar = width / len(rates)
    bars = []
    for i, (t, objects, nbytes) in enumerate(rates):
        h = max(nbytes, 0.0) / peak * (height - 20)
        label = f"{time.strftime('%H:%M', time.gmtime(t))} UTC: {_rate(nbytes)}, {objects:.1f} objects/s"
        bars.append(
            f'<rect x="{i * bar:.1f}" y="{height - h:.1f}" width="{max(bar - 1, 1):.1f}" height="{h:.1f}" fill="#3a7">'
            f"<title>{escape(label)}</title></rect>"
        )
    last = rates[-1]
    caption = f"now {_rate(last[2])}, {last[1]:.1f} objects/s; peak {_rate(peak)}"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="ingest rate"><text x="4" y="14" font-size="12">{escape(caption)}</text>{"".join(bars)}</svg>'
    )
