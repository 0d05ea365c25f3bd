"""pynetdicom's reactor loops woken by events instead of polling every millisecond.

pynetdicom runs two loops per association. The DUL thread, when it found
nothing to do, sleeps 1 ms before looking at its send queue and socket
again; the association thread sleeps 1 ms before each look at its DIMSE
message queue. Every hand-off between the two threads, and every P-DATA
queued for sending while the DUL sleeps, waits for one of those sleeps:
retrieving a 512 KiB instance cut into 16 KiB PDUs (dcmtk's default
maximum) hit dozens of them, and on a busy host each sleep lasts far longer
than asked. :func:`install_event_driven_reactors` replaces the two sleeps
with waits that end as soon as there is work:

* an idle DUL thread waits in ``select`` on its socket and on a wake-up
  socket pair that every primitive queued for sending (``send_pdu``) and
  every ``kill_dul`` writes to;
* an idle association thread waits on an event that the DUL thread sets
  after each state-machine action (a decoded message, a release or abort
  indication) and when it stops, and that pausing the reactor sets (a
  sender waits for the reactor to pause before each request).

It also closes a race of pynetdicom's: a thread sending a request pauses the
association's reactor (clears its checkpoint) and waits for the response;
the reactor, if it had just passed its checkpoint, could still take that
response off the DIMSE queue and drop it ("Received unexpected C-STORE
service message"; seen on C-MOVE sub-associations under load). The reactor
now takes a message only while the checkpoint is set, checked under the
same lock that clearing it takes.

Guarantees: the loops run the same code in the same order as before, only
their idle wait changes; nothing is missed when a wake-up comes between a
loop's check and its wait (the wake-up byte stays readable, the event stays
set); a loop that is not woken still looks again after :data:`IDLE_WAIT`
(timers, anything queued by a path not hooked here); the wake-up sockets
are closed when the DUL thread ends. Process-wide and idempotent, as
pynetdicom's own configuration is.
"""

from __future__ import annotations

import functools
import select
import socket
import ssl
import threading
import time as _time
from typing import Any

from pynetdicom import association as _association_module
from pynetdicom import dul as _dul_module
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import StateMachine

__all__ = ["IDLE_WAIT", "install_event_driven_reactors", "send_lock"]

#: Longest idle wait of either loop when nothing wakes it (was 1 ms of polling).
IDLE_WAIT = 0.005
_DUL_LOOP_DELAY = 0.001  # pynetdicom's DUL._run_loop_delay
_ASSOC_LOOP_DELAY = 0.001  # the sleep at the top of Association._run_reactor
_WAKE = "_objfs_wake"  # DUL attribute: (reader, writer) socket pair
_ACTIVITY = "_objfs_activity"  # Association attribute: threading.Event
_SEND_LOCK = "_objfs_send_lock"  # DUL attribute: held by every state-machine action (see send_lock)
_INSTALLED = "_objfs_reactor"  # marks the patched DUL run_reactor (flow.py and spool.py mark theirs "_objfs")


class _Clock:
    """The ``time`` module as pynetdicom's dul/association modules see it, with ``sleep`` replaced."""

    def __init__(self, sleep: Any) -> None:
        self.sleep = sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


class _Checkpoint(threading.Event):
    """An association's reactor checkpoint: clearing it (pausing the reactor) wakes the reactor
    and excludes a message being taken by the reactor at the same time."""

    def __init__(self, assoc: Association) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.assoc = assoc

    def clear(self) -> None:
        with self.lock:
            super().clear()
        activity = getattr(self.assoc, _ACTIVITY, None)
        if activity is not None:
            activity.set()


def send_lock(dul: DULServiceProvider) -> threading.Lock | None:
    """The lock every state-machine action of ``dul`` runs under (None before its thread runs).

    Actions take a queued primitive and write its PDU; whoever holds this
    lock and sees the send queue empty knows every PDU queued before is
    written (:mod:`.direct` relies on it).
    """
    return getattr(dul, _SEND_LOCK, None)


def _wake_dul(dul: DULServiceProvider) -> None:
    pair = getattr(dul, _WAKE, None)
    if pair is not None:
        try:
            pair[1].send(b"\0")
        except OSError:  # full (the DUL is busy and will look anyway) or closed (it ended)
            pass


def _dul_sleep(delay: float) -> None:
    dul = threading.current_thread()
    if delay != _DUL_LOOP_DELAY or not isinstance(dul, DULServiceProvider):
        _time.sleep(delay)
        return
    pair = getattr(dul, _WAKE, None)
    if pair is None:
        _time.sleep(delay)
        return
    if dul.to_provider_queue.qsize() or dul.event_queue.qsize() or dul._kill_thread:
        return
    watched: list[Any] = [pair[0]]
    sock = getattr(dul.socket, "socket", None) if dul.socket is not None else None
    if sock is not None and sock.fileno() >= 0:
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes select cannot see
        watched.append(sock)
    try:
        ready, _, _ = select.select(watched, [], [], IDLE_WAIT)
    except (OSError, ValueError):  # the socket closed under us: the loop notices
        return
    if pair[0] in ready:
        try:
            while pair[0].recv(4096):
                pass
        except OSError:  # drained (non-blocking)
            pass


def _assoc_sleep(delay: float) -> None:
    assoc = threading.current_thread()
    if delay != _ASSOC_LOOP_DELAY or not isinstance(assoc, Association):
        _time.sleep(delay)
        return
    activity = getattr(assoc, _ACTIVITY, None)
    if activity is None:
        activity = threading.Event()
        setattr(assoc, _ACTIVITY, activity)
    # Cleared before the loop looks again, so a set that comes after the look wakes the next wait.
    if activity.wait(IDLE_WAIT):
        activity.clear()


def _signal_assoc(dul: DULServiceProvider) -> None:
    activity = getattr(getattr(dul, "assoc", None), _ACTIVITY, None)
    if activity is not None:
        activity.set()


def install_event_driven_reactors() -> None:
    """Replace pynetdicom's 1 ms polling sleeps by event waits (see the module docstring)."""
    if getattr(DULServiceProvider.run_reactor, _INSTALLED, False):
        return
    original_run = DULServiceProvider.run_reactor
    original_send = DULServiceProvider.send_pdu
    original_kill = DULServiceProvider.kill_dul
    original_action = StateMachine.do_action
    original_init = Association.__init__
    original_get_msg = DIMSEServiceProvider.get_msg

    @functools.wraps(original_init)
    def init(self: Association, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        setattr(self, _ACTIVITY, threading.Event())
        checkpoint = _Checkpoint(self)
        if self._reactor_checkpoint.is_set():
            checkpoint.set()
        self._reactor_checkpoint = checkpoint

    @functools.wraps(original_get_msg)
    def get_msg(self: DIMSEServiceProvider, block: bool = False) -> Any:
        assoc = self.assoc
        checkpoint = getattr(assoc, "_reactor_checkpoint", None)
        if block or not isinstance(checkpoint, _Checkpoint) or threading.current_thread() is not assoc:
            return original_get_msg(self, block)
        with checkpoint.lock:  # the reactor polling: never while a sender has paused it
            if not checkpoint.is_set():
                return None, None
            return original_get_msg(self, block)

    @functools.wraps(original_run)
    def run_reactor(self: DULServiceProvider) -> None:
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        setattr(self, _WAKE, (reader, writer))
        setattr(self, _SEND_LOCK, threading.Lock())
        try:
            original_run(self)
        finally:
            setattr(self, _WAKE, None)
            reader.close()
            writer.close()
            _signal_assoc(self)

    @functools.wraps(original_send)
    def send_pdu(self: DULServiceProvider, primitive: Any) -> None:
        original_send(self, primitive)
        _wake_dul(self)

    @functools.wraps(original_kill)
    def kill_dul(self: DULServiceProvider) -> None:
        original_kill(self)
        _wake_dul(self)

    @functools.wraps(original_action)
    def do_action(self: StateMachine, event: str) -> None:
        lock = send_lock(self.dul)
        try:
            if lock is None:
                original_action(self, event)
            else:
                with lock:
                    original_action(self, event)
        finally:
            _signal_assoc(self.dul)

    setattr(run_reactor, _INSTALLED, True)
    DULServiceProvider.run_reactor = run_reactor  # type: ignore[method-assign]
    DULServiceProvider.send_pdu = send_pdu  # type: ignore[method-assign]
    DULServiceProvider.kill_dul = kill_dul  # type: ignore[method-assign]
    StateMachine.do_action = do_action  # type: ignore[method-assign]
    Association.__init__ = init  # type: ignore[method-assign]
    DIMSEServiceProvider.get_msg = get_msg  # type: ignore[method-assign]
    _dul_module.time = _Clock(_dul_sleep)  # type: ignore[assignment]
    _association_module.time = _Clock(_assoc_sleep)  # type: ignore[assignment]
