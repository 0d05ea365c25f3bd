"""systemd's notify protocol (sd_notify(3)) without libsystemd: one datagram per state change.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or
``@name`` for an abstract socket) and, with ``WatchdogSec=``,
``WATCHDOG_USEC``. ``objfs serve`` sends ``READY=1`` once every front is up,
``WATCHDOG=1`` at half the watchdog interval while the fronts report healthy,
``RELOADING=1``/``READY=1`` around a reload and ``STOPPING=1`` on the way out.
Guarantee: without ``NOTIFY_SOCKET`` every call is a no-op, and a failing
send is logged, never raised (the service manager's absence must not stop
the appliance).
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("objfs.sdnotify")


def notify(state: str, environ: os._Environ[str] | dict[str, str] | None = None) -> bool:
    """Send ``state`` (``"READY=1"``, ``"WATCHDOG=1"``, ...) to ``$NOTIFY_SOCKET``; False if there is none."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", env.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def watchdog_interval(environ: os._Environ[str] | dict[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None when no watchdog is armed.

    ``WATCHDOG_PID``, when set, must be this process: a watchdog meant for
    another process (a parent that exec'd us keeps the variable) is ignored.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as ``RELOADING=1``'s ``MONOTONIC_USEC=`` wants it."""
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)
