"""Log lines for a terminal or for journald: syslog priority prefixes when not on a terminal.

Under systemd, stderr is a journald stream (``JOURNAL_STREAM`` is set) that
reads a ``<N>`` prefix on each line as the line's priority, so
``journalctl -p warning`` finds warnings and errors. :func:`configure_logging`
adds the prefix when stderr is not a terminal or ``JOURNAL_STREAM`` is set,
on every line of a record (a traceback's lines are errors too, not info).
On a terminal the lines stay plain.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

#: Python level -> syslog priority (sd-daemon(3)).
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
DEBUG_PRIORITY = 7
FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def priority(levelno: int) -> int:
    """The syslog priority of a Python log level."""
    for level, prio in PRIORITIES:
        if levelno >= level:
            return prio
    return DEBUG_PRIORITY


class JournalFormatter(logging.Formatter):
    """Prefix every line of a record with ``<priority>``."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def wants_priorities(stream: TextIO | None = None) -> bool:
    """Whether lines to ``stream`` (stderr) should carry priority prefixes."""
    stream = stream or sys.stderr
    if os.environ.get("JOURNAL_STREAM"):
        return True
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr at ``level``, prefixed for journald when it is not a terminal.

    Hypercorn's own logger is routed here too (the fronts pass it as their
    ``errorlog``), quieted to warnings: its start-up lines repeat our banner.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter(FORMAT) if wants_priorities() else logging.Formatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)
