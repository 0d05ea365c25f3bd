"""Several gateway processes behind one DICOM port (``[dicom] processes``).

pynetdicom runs every association as Python threads of one process, so a
gateway is bound to one core by the GIL: with four modalities sending at
once it stored fewer instances per second than with one. With
``processes = N`` (default: one per CPU core) the gateway serves
associations from N processes:

* the process that runs :func:`objfs.dicom.server.serve_dicom` listens,
  accepts each connection and hands it to the process with the fewest live
  associations (itself included; ties go to the least recently chosen), so
  concurrent associations land in different processes;
* the other N-1 are workers (``python -m objfs.dicom.processes``), each with
  its own store handle (LMDB, the audit log and the volumes are multi-process
  safe: each process appends to its own active volume per drive) and its own
  pynetdicom AE built by the same :func:`~objfs.dicom.server.build_ae`. A
  connection reaches a worker as a file descriptor passed over a unix
  socket (``SCM_RIGHTS``); the worker answers its A-ASSOCIATE-RQ as a one
  process gateway would. Each process keeps at most ``MAX_ASSOCIATIONS``.

Guarantees:

* Nothing about an association changes with the process serving it: same
  handlers, same engine calls, a C-STORE answered only after ``put_object``
  returned (volume fdatasync, LMDB commit, audit line), WORM, access policy
  and audit in the engine of that process.
* The calling-AE allowlist is the dispatcher's as of the moment it accepted
  the connection (a reload of objfs.toml under ``objfs serve`` applies to
  the next connection, whichever process serves it).
* A worker that dies while the gateway runs stops the gateway
  (:class:`GatewayProcessDied`): ``objfs serve`` then stops every front, as
  for any front that stops, and ``objfs dicom`` exits non-zero. A worker
  never outlives its dispatcher: it stops when its control socket closes
  (the dispatcher stopped, or was killed), aborting its associations as
  the one-process gateway does on shutdown. Workers ignore SIGINT and
  SIGTERM and follow the dispatcher, so one Ctrl-C or ``systemctl stop``
  stops all of them in order.
* Log lines of workers go to the same stderr, formatted as the
  dispatcher's (``objfs dicom``'s carry the pid of the process that wrote them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger("objfs.dicom")

#: ``processes`` left unset: one per core, at most this many.
MAX_AUTO_PROCESSES = 8
#: A worker that has not said it is ready after this long is a failed start.
START_SECONDS = 90.0
#: How long stopping waits for a worker to end its associations before killing it.
STOP_SECONDS = 30.0
#: How often the dispatcher looks at its stop event while nothing happens.
STOP_POLL = 0.2
_READY, _CLOSED = b"R", b"C"
_MESSAGE_MAX = 64 << 10


class GatewayProcessDied(RuntimeError):
    """A gateway worker process ended while the gateway was serving."""


def process_count(configured: int | None) -> int:
    """The number of gateway processes: ``[dicom] processes``, or one per core (at most 8)."""
    if configured is not None:
        return configured
    return max(1, min(len(os.sched_getaffinity(0)), MAX_AUTO_PROCESSES))


class HandedServer(ThreadedAssociationServer):
    """A pynetdicom association server that listens on nothing: connections are handed to it.

    :meth:`serve_connection` runs a connection exactly as pynetdicom's own
    server runs an accepted one (a thread per request, TLS wrapped there
    rather than in an accept loop, so a slow handshake delays nobody else).
    ``on_closed`` is called once per connection when it closes.
    """

    on_closed: Callable[[], None] = staticmethod(lambda: None)

    def server_bind(self) -> None:  # nothing to listen on
        pass

    def server_activate(self) -> None:
        pass

    def serve_connection(self, sock: socket.socket, address: tuple[str, int]) -> None:
        self.process_request(sock, address)  # ThreadingMixIn: finish_request in a new thread

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context:
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.info("TLS handshake with %s:%s failed: %s", client_address[0], client_address[1], exc)
                request.close()
                self.on_closed()
                return
        super().finish_request(request, client_address)

    def shutdown(self) -> None:
        # BaseServer.shutdown waits for serve_forever, which never runs here.
        self.server_close()
        if self in self.ae._servers:
            self.ae._servers.remove(self)


def count_closes(on_closed: Callable[[], None]) -> tuple[Any, Callable[[Any], None]]:
    """An EVT_CONN_CLOSE handler calling ``on_closed`` once per association."""

    def closed(event: Any) -> None:
        assoc = event.assoc
        if getattr(assoc, "_objfs_close_counted", False):
            return
        assoc._objfs_close_counted = True
        on_closed()

    return (evt.EVT_CONN_CLOSE, closed)


def listen(host: str, port: int) -> socket.socket:
    """The gateway's listening socket (as pynetdicom's server makes it: SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Worker:
    """A worker process as the dispatcher sees it."""

    def __init__(self, number: int, proc: subprocess.Popen, control: socket.socket) -> None:
        self.number = number
        self.proc = proc
        self.control = control
        self.active = 0
        self.ready = False
        self.chosen = 0.0

    def describe(self) -> str:
        code = self.proc.poll()
        return f"DICOM gateway process {self.number} (pid {self.proc.pid}) " + (
            f"exited with status {code}" if code is not None else "closed its control socket"
        )


def spawn_worker(number: int, store_root: Path, argv: list[str]) -> _Worker:
    """Start worker ``number`` (a fresh interpreter: never a fork of a process holding LMDB and threads)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    import objfs

    env = dict(os.environ)
    code_root = str(Path(objfs.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([code_root, *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "objfs.dicom.processes", str(store_root), "--control-fd", str(theirs.fileno()), *argv]
    try:
        proc = subprocess.Popen(cmd, env=env, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return _Worker(number, proc, ours)


class Dispatcher:
    """Accepts on the gateway's port and hands each connection to the least busy process."""

    def __init__(
        self,
        listener: socket.socket,
        local: HandedServer,
        workers: list[_Worker],
        allowlist: Callable[[], list[str]],
    ) -> None:
        self.listener = listener
        self.local = local
        self.workers = workers
        self.allowlist = allowlist
        self._lock = threading.Lock()
        self.local_active = 0
        self.local_chosen = 0.0
        local.on_closed = self._local_closed

    def _local_closed(self) -> None:
        with self._lock:
            self.local_active = max(0, self.local_active - 1)

    def wait_ready(self, stop: threading.Event) -> None:
        """Until every worker said it is ready; raises GatewayProcessDied for one that ended first."""
        deadline = time.monotonic() + START_SECONDS
        while not all(w.ready for w in self.workers):
            if stop.is_set():
                return
            if time.monotonic() > deadline:
                raise GatewayProcessDied(f"a DICOM gateway process did not start within {START_SECONDS:.0f} s")
            ready, _, _ = select.select([w.control for w in self.workers if not w.ready], [], [], STOP_POLL)
            for worker in self.workers:
                if worker.control in ready:
                    self._read_control(worker)

    def _read_control(self, worker: _Worker) -> None:
        try:
            data = worker.control.recv(_MESSAGE_MAX)
        except OSError:
            data = b""
        if not data:
            raise GatewayProcessDied(worker.describe())
        for byte in data:
            if byte == _READY[0]:
                worker.ready = True
            elif byte == _CLOSED[0]:
                worker.active = max(0, worker.active - 1)

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; raises GatewayProcessDied when a worker ends first."""
        while not stop.is_set():
            watched = [self.listener, *(w.control for w in self.workers)]
            ready, _, _ = select.select(watched, [], [], STOP_POLL)
            for worker in self.workers:
                if worker.control in ready:
                    self._read_control(worker)
            if self.listener in ready:
                self._accept_all()

    def _accept_all(self) -> None:
        while True:
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: the connection waits in the backlog
                log.warning("DICOM gateway could not accept a connection: %s", exc)
                return
            sock.setblocking(True)
            self._hand(sock, (str(address[0]), int(address[1])))

    def _hand(self, sock: socket.socket, address: tuple[str, int]) -> None:
        now = time.monotonic()
        with self._lock:
            candidates: list[tuple[int, float, _Worker | None]] = [(self.local_active, self.local_chosen, None)]
            candidates += [(w.active, w.chosen, w) for w in self.workers]
            _, _, target = min(candidates, key=lambda c: (c[0], c[1]))
            if target is None:
                self.local_active += 1
                self.local_chosen = now
        if target is None:
            self.local.serve_connection(sock, address)
            return
        target.active += 1
        target.chosen = now
        message = json.dumps({"address": list(address), "allowed": self.allowlist()}).encode()
        try:
            socket.send_fds(target.control, [message], [sock.fileno()])
        except OSError:
            target.active -= 1
            sock.close()
            raise GatewayProcessDied(target.describe()) from None
        sock.close()  # the worker holds its own descriptor now

    def stop_workers(self) -> None:
        """Close every control socket (workers then stop) and wait for them; kill one that hangs."""
        for worker in self.workers:
            try:
                worker.control.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            worker.control.close()
        deadline = time.monotonic() + STOP_SECONDS
        for worker in self.workers:
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("DICOM gateway process %d (pid %d) did not stop; killed", worker.number, worker.proc.pid)
                worker.proc.kill()
                worker.proc.wait()


# -- the worker side --------------------------------------------------------------


def _configure_logging(style: str, verbose: bool) -> None:
    if style == "journal":  # objfs serve's lines, unchanged (journalctl greps them by logger name)
        from objfs.admin.journal import configure_logging

        configure_logging(logging.INFO)
        return
    from objfs.cli.dicom import configure_logging

    configure_logging(verbose)


def worker_main(argv: list[str] | None = None) -> int:
    """A worker: serve the connections the dispatcher hands over its control socket until it closes."""
    parser = argparse.ArgumentParser(prog="objfs-dicom-worker")
    parser.add_argument("store")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--aet")
    parser.add_argument("--bucket")
    parser.add_argument("--log", choices=["cli", "journal"], default="cli")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    # The dispatcher decides when workers stop (it closes the control socket).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _configure_logging(args.log, args.verbose)
    control = socket.socket(fileno=args.control_fd)
    from objfs.store.storelock import hold_shared
    from objfs.stores import Store

    from .server import build_server

    with hold_shared(args.store), Store.open(args.store) as store:
        allowed: list[list[str]] = [list(store.config.dicom.allowed_aets)]

        def closed() -> None:
            try:
                control.send(_CLOSED)
            except OSError:  # the dispatcher is gone: this worker is stopping anyway
                pass

        ae, server = build_server(store, aet=args.aet, bucket=args.bucket, on_closed=closed, create_buckets=False)
        ae.allowlist = lambda: allowed[0]  # type: ignore[attr-defined]
        control.send(_READY)
        try:
            while True:
                try:
                    message, fds, _, _ = socket.recv_fds(control, _MESSAGE_MAX, 1)
                except OSError:
                    break
                if not message:
                    break
                request = json.loads(message)
                allowed[0] = [a.strip() for a in request["allowed"]]
                for fd in fds[1:]:
                    os.close(fd)
                if not fds:
                    continue
                sock = socket.socket(fileno=fds[0])
                sock.setblocking(True)
                host, port = request["address"]
                server.serve_connection(sock, (host, int(port)))
        finally:
            server.shutdown()
            ae.shutdown()
            control.close()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
