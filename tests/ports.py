"""Loopback ports for the servers tests start.

Asking the kernel for a free port and closing the socket can hand the same
port out twice in a row, and two servers of one test then collide; this
never returns a port twice in one process.
"""

from __future__ import annotations

import socket

_given: set[int] = set()


def free_port() -> int:
    """A loopback TCP port that is free now and was not handed out before in this process."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given:
            _given.add(port)
            return port
