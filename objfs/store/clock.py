"""The engine's one clock.

Retention, lifecycle and replication read time only from :class:`Clock`, so a
test can move it forward by years in a millisecond with :meth:`Clock.advance`.
"""

from __future__ import annotations

import threading
import time


class Clock:
    """Wall-clock time plus an offset that only moves forward."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Seconds since the epoch, as the engine sees them."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward; it never goes back."""
        if seconds < 0:
            raise ValueError("the engine clock only moves forward")
        with self._lock:
            self._offset += seconds
