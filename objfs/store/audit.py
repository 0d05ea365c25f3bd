"""The audit trail: an append-only, hash-chained JSON-lines log.

Every write, delete, retention or legal-hold change, denied attempt and read
that goes through the engine is one line::

    {"seq": 12, "t": "2026-11-28T23:59:01.123Z", "who": "s3:AKIA...", "action": "delete",
     "bucket": "pacs", "key": "...", "version": "...", "outcome": "denied", "detail": "...",
     "prev": "<hash of line 11>", "hash": "<sha256 of this line without 'hash'>"}

Editing, removing or reordering any line breaks the chain, which
``objfs audit verify`` reports. The newest seq and hash are pinned twice:
in ``audit/head`` and in ``STORE/audit.pin``, outside the log's directory,
so cutting lines off the end is caught even with ``audit/head`` deleted,
and a log removed or replaced together with its directory is caught by
the pin (a store that never wrote a line has neither, and verifies ok).
A line appended after such a cut continues the pinned numbering, so the
gap stays visible after the pins have moved on.
The pin is a file rather than an LMDB record because a line is appended
after its change's index commit, so a pin riding on index commits would
always miss the newest line, and a commit of its own costs a full fsync.
A site that must also survive an attacker who rewrites every copy should
copy the head hash off the appliance (``objfs audit verify`` prints it).
Appends from several processes are serialized with ``flock``; changes are
fdatasynced before the call returns (concurrent changes of one process
share one fdatasync: group commit), reads are flushed to the OS only (an
audit line per read must not double the cost of a read). A durable line's
pins are written after the line is synced and are not synced themselves, so
on disk they never run ahead of the log: a power cut can only leave them
older, never a false alarm.

**Sealed segments.** Once the live log reaches ``[audit] segment_bytes`` (or
on ``objfs audit rotate``) it is sealed: kept as a read-only
``sealed-<first seq>-<last seq>.log`` beside it, and a new live log starts
with a ``seal`` line naming that segment, chained to its last line. The
chain thus runs unbroken across every segment: ``verify`` reads them all,
in order, so removing, truncating or replacing a segment (the oldest one
included: the chain must start at seq 1) is reported like a removed line.
A process that waited for the lock of a log sealed meanwhile reopens the new
one (same inode check as ``logrotate``'s ``copytruncate`` avoids).

**Syslog.** With ``[audit] syslog`` every line is also sent, after it is
written, as one RFC 5424 datagram (facility authpriv, severity notice; a
denial at warning) to ``udp://HOST:PORT`` or a unix socket such as
``/dev/log``. Sending is best effort: a lost datagram never fails the call
(the log on disk is the record).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
LOG_NAME = "audit.log"
HEAD_NAME = "head"
PIN_NAME = "audit.pin"  # beside the audit directory, in the store's root
HEAD_WIDTH = 128
SEALED_PREFIX = "sealed-"


def _digest(entry: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in entry.items() if k != "hash"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


class AuditLog:
    """The audit log of one store. Thread- and process-safe appends."""

    def __init__(self, directory: Path, *, segment_bytes: int = 0, syslog: str = "") -> None:
        self.directory = directory
        directory.mkdir(exist_ok=True)
        self.path = directory / LOG_NAME
        self.pin_path = directory.parent / PIN_NAME
        self.segment_bytes = segment_bytes
        self.exporter = SyslogExporter(syslog) if syslog else None
        # Group commit: the newest line this process wrote, and the newest it knows synced.
        self._sync = threading.Condition()
        self._written: tuple[int, str] = (0, GENESIS)
        self._synced = 0
        self._syncing = False

    def _open_locked(self) -> int:
        """The live log, open and flocked; reopened if it was sealed while this process waited."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def append(self, *, who: str, action: str, outcome: str, now: float, durable: bool, **fields: Any) -> None:
        """Add one line; with ``durable`` it is on disk before this returns."""
        fd = self._open_locked()
        try:
            entry = self._append_locked(fd, who=who, action=action, outcome=outcome, now=now, durable=durable, **fields)
            if self.segment_bytes and os.fstat(fd).st_size >= self.segment_bytes:
                self._seal_locked(fd, now)
        finally:
            os.close(fd)  # and with it the lock
        if durable:
            # A seal after this line was written fsynced the log it is in, under the lock.
            self._sync_through(entry["seq"])
        if self.exporter is not None:
            self.exporter.send(entry)

    def _append_locked(self, fd: int, *, who: str, action: str, outcome: str, now: float, durable: bool, **fields: Any) -> dict:
        seq, prev = self._last(fd)
        # Lines lost behind a pin stay visible: the next line keeps the pinned numbering,
        # so verify shows the gap even after the pins have moved past it.
        seq = max([seq, *(p["seq"] for p in self._pins() if isinstance(p.get("seq"), int))])
        entry = {"seq": seq + 1, "t": iso(now), "who": who, "action": action, "outcome": outcome}
        entry.update({k: v for k, v in fields.items() if v is not None})
        entry["prev"] = prev
        entry["hash"] = _digest(entry)
        os.write(fd, (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode())
        with self._sync:
            self._written = max(self._written, (entry["seq"], entry["hash"]))
        if not durable:
            self._write_head(entry["seq"], entry["hash"])
        return entry

    # -- sealed segments ------------------------------------------------------

    def rotate(self, now: float) -> Path | None:
        """Seal the live log now (``objfs audit rotate``); returns the segment, None if the log is empty."""
        fd = self._open_locked()
        try:
            return self._seal_locked(fd, now)
        finally:
            os.close(fd)

    def _seal_locked(self, fd: int, now: float) -> Path | None:
        """Keep the live log (whose lock ``fd`` holds) as a read-only segment; a new log starts with a ``seal`` line.

        The new log is written in full (its seal line chained to the old
        log's last line, fsynced) before it replaces the old one by rename,
        so a crash leaves either the old log or both files, never a gap.
        """
        last_seq, last_hash = self._last(fd)
        if last_seq <= 0:
            return None
        first = os.pread(fd, 4096, 0).split(b"\n", 1)[0]
        try:
            first_seq = int(json.loads(first)["seq"])
        except (ValueError, KeyError, TypeError):
            first_seq = 0
        os.fsync(fd)
        segment = self.directory / f"{SEALED_PREFIX}{first_seq:012d}-{last_seq:012d}.log"
        entry = {"seq": last_seq + 1, "t": iso(now), "who": "system:audit", "action": "seal", "outcome": "ok"}
        entry.update(detail=segment.name, prev=last_hash)
        entry["hash"] = _digest(entry)
        fresh = self.directory / (LOG_NAME + ".new")
        with open(fresh, "wb") as f:
            f.write((json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(fresh, 0o600)
        live = os.fstat(fd).st_ino
        for stale in self.directory.glob(SEALED_PREFIX + "*.log"):
            if stale.stat().st_ino == live:  # an interrupted seal linked the live log: not a segment yet
                stale.unlink()
        os.link(self.path, segment)
        os.chmod(segment, 0o400)
        os.rename(fresh, self.path)
        _fsync_dir(self.directory)
        self._write_head(entry["seq"], entry["hash"])
        return segment

    def segments(self) -> list[Path]:
        """The sealed segments, oldest first, then the live log."""
        try:
            live = self.path.stat().st_ino
        except FileNotFoundError:
            live = None
        # A segment that is still the live log (a seal interrupted before its rename) is read once, as the log.
        sealed = sorted(p for p in self.directory.glob(SEALED_PREFIX + "*.log") if p.stat().st_ino != live)
        return [*sealed, self.path]

    def _sync_through(self, seq: int) -> None:
        """Make this process's lines up to ``seq`` durable, then pin the newest synced one.

        One caller syncs for all that wait meanwhile (their lines were written
        before its fdatasync began); a failed sync raises to that caller and
        the next waiter tries again.
        """
        with self._sync:
            while self._synced < seq and self._syncing:
                self._sync.wait()
            if self._synced >= seq:
                return
            self._syncing = True
            target = self._written
        done = 0
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
            try:
                os.fdatasync(fd)
                fcntl.flock(fd, fcntl.LOCK_EX)
                newest = max([0, *(p["seq"] for p in self._pins() if isinstance(p.get("seq"), int))])
                if newest < target[0]:  # never move a pin back past a line another writer pinned
                    self._write_head(*target)
            finally:
                os.close(fd)
            done = target[0]
        finally:
            with self._sync:
                self._synced = max(self._synced, done)
                self._syncing = False
                self._sync.notify_all()

    def _last(self, fd: int) -> tuple[int, str]:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, GENESIS
        tail = os.pread(fd, min(size, 65536), max(0, size - 65536))
        line = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            last = json.loads(line)
            return int(last["seq"]), str(last["hash"])
        except (ValueError, KeyError):
            # A damaged tail: keep appending, chained to a marker verify will flag.
            return -1, "damaged"

    def _pins(self) -> list[dict[str, Any]]:
        """The readable pinned heads (an unreadable one is verify's to report)."""
        out = []
        for path in (self.directory / HEAD_NAME, self.pin_path):
            try:
                pinned = _read_pin(path)
            except (OSError, ValueError):
                continue
            if pinned is not None:
                out.append(pinned)
        return out

    def _write_head(self, seq: int, digest: str) -> None:
        """Pin the chain's newest line (under the log's lock), so cutting lines off the end shows.

        One fixed-width write in place per copy, not synced: cheap enough for
        every read (see the module's docstring).
        """
        body = json.dumps({"seq": seq, "hash": digest}).ljust(HEAD_WIDTH).encode()
        for path in (self.directory / HEAD_NAME, self.pin_path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.pwrite(fd, body, 0)
            finally:
                os.close(fd)

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every line of every segment and of the live log, oldest first."""
        for path in self.segments():
            for _, entry in _lines(path):
                yield entry

    def verify(self) -> tuple[list[str], dict[str, Any]]:
        """(problems, head). No problems means no line was edited, removed or reordered."""
        problems: list[str] = []
        prev, expected_seq, count = GENESIS, 1, 0
        hashes: dict[int, str] = {}
        located = (
            (str(n) if path == self.path else f"{n} of {path.name}", entry)
            for path in self.segments()
            for n, entry in _lines(path)
        )
        for lineno, entry in located:
            count += 1
            if "unparseable" in entry:
                problems.append(f"line {lineno}: not a JSON audit entry")
                prev, expected_seq = "damaged", expected_seq + 1
                continue
            if entry.get("seq") != expected_seq:
                problems.append(
                    f"line {lineno}: sequence {entry.get('seq')} where {expected_seq} was expected (a line was removed or reordered)"
                )
            if entry.get("prev") != prev:
                problems.append(f"line {lineno}: does not chain to the line before it (a line was removed, reordered or edited)")
            if _digest(entry) != entry.get("hash"):
                problems.append(f"line {lineno}: its content does not match its hash (the line was edited)")
            prev = entry.get("hash", "")
            if isinstance(entry.get("seq"), int):
                hashes[entry["seq"]] = prev
            expected_seq = (entry.get("seq") or expected_seq) + 1
        head: dict[str, Any] = {"seq": expected_seq - 1, "hash": prev, "lines": count}
        for where, path in (("audit/head", self.directory / HEAD_NAME), (PIN_NAME, self.pin_path)):
            problems += _check_pin(where, path, hashes, head["seq"])
        return problems, head

    def show(
        self, *, bucket: str | None = None, key: str | None = None, since: float | None = None, who: str | None = None
    ) -> list[dict[str, Any]]:
        """Entries matching the filters (key matches exactly or as a prefix ending in '/')."""
        out = []
        since_iso = iso(since) if since is not None else None
        for entry in self.entries():
            if "unparseable" in entry:
                continue
            if bucket and entry.get("bucket") != bucket:
                continue
            if key and not (entry.get("key") == key or (key.endswith("/") and str(entry.get("key", "")).startswith(key))):
                continue
            if who and who not in str(entry.get("who", "")):
                continue
            if since_iso and entry.get("t", "") < since_iso:
                continue
            out.append(entry)
        return out


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    yield lineno, json.loads(raw)
                except ValueError:
                    yield lineno, {"unparseable": raw.decode(errors="replace").rstrip("\n")}
    except FileNotFoundError:
        return


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SyslogExporter:
    """Every audit line as one RFC 5424 datagram to ``udp://HOST:PORT`` or a unix socket (``/dev/log``)."""

    FACILITY = 10  # authpriv: security and authorization messages

    def __init__(self, target: str) -> None:
        self.target = target
        self.hostname = socket.gethostname()
        if target.startswith("udp://"):
            host, _, port = target[len("udp://") :].rpartition(":")
            host = host.strip("[]") or "127.0.0.1"
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.address: Any = (host, int(port or 514))
        else:
            family, self.address = socket.AF_UNIX, target
        self.sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)

    def send(self, entry: dict[str, Any]) -> None:
        severity = 4 if entry.get("outcome") in ("denied", "failed") else 5  # warning, notice
        line = json.dumps(entry, sort_keys=True, separators=(",", ":"))
        message = f"<{self.FACILITY * 8 + severity}>1 {entry.get('t', '-')} {self.hostname} objfs-audit {os.getpid()} - - {line}"
        try:
            self.sock.sendto(message.encode(), self.address)
        except OSError:
            pass  # best effort: the log on disk is the record


def _read_pin(path: Path) -> dict[str, Any] | None:
    """A pinned head, None where there is none; ValueError or OSError where it is unreadable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    # Empty: created but never written back before a power cut, as good as absent.
    pinned = json.loads(text) if text.strip() else None
    if pinned is not None and not isinstance(pinned, dict):
        raise ValueError("not a pinned head")
    return pinned


def _check_pin(where: str, path: Path, hashes: dict[int, str], last_seq: int) -> list[str]:
    """What a pinned head says is wrong with a log whose lines have ``hashes`` (by seq)."""
    try:
        pinned = _read_pin(path)
    except (OSError, ValueError):
        return [f"{where} is unreadable: it was damaged or overwritten"]
    if pinned is None:
        return []
    seq = pinned.get("seq")
    if seq not in hashes:
        if not hashes:
            return [f"the log is empty or missing, but {where} records line {seq}: the log was removed"]
        return [f"the log ends at seq {last_seq} but {where} records line {seq}: lines were cut off the end"]
    if hashes[seq] != pinned.get("hash"):
        return [f"line with seq {seq} differs from the one {where} recorded when it was written"]
    return []


def audited(action: str, *, durable: bool = True, target: Any = None, scope: Any = None, only_denials: bool = False):
    """Check and record calls of an engine method: the one place the engine applies :mod:`.access`.

    A call with a ``principal`` is first checked against the rights
    ``action`` needs (and those of its lock arguments, ``retention`` and
    ``legal_hold``) on the bucket it names: AccessDenied before any work.
    Calls with a principal are logged with their outcome (with
    ``only_denials``, for lookups and listings, only refusals are); a WORM
    or permission refusal is logged whoever asked, durably.
    ``target(args, kwargs, result)`` names the bucket, key and version
    (default: the first two positional arguments and ``version_id``).
    ``scope(store, args, kwargs)`` lists the ``(action, bucket)`` pairs to
    check when the target's bucket is not the whole story (a copy reads
    its source; an upload's bucket is in its record); the first pair's
    action also needs the rights of the lock arguments.
    """
    from .access import LOCK_ARGUMENTS
    from .errors import AccessDenied, ObjectLocked, StoreError

    def name(args: tuple, kwargs: dict, result: Any) -> dict[str, Any]:
        if target is not None:
            return target(args, kwargs, result)
        version = kwargs.get("version_id") or getattr(getattr(result, "info", result), "version_id", None)
        return {
            "bucket": args[0] if args else kwargs.get("bucket"),
            "key": args[1] if len(args) > 1 else kwargs.get("key"),
            "version": version,
        }

    def check(store: Any, principal: Any, args: tuple, kwargs: dict) -> None:
        key = None
        if scope is None:
            named = name(args, kwargs, None)
            pairs, key = [(action, named["bucket"])], named.get("key")
        else:
            pairs = scope(store, args, kwargs)
        locks = {arg: kwargs.get(arg) for arg in LOCK_ARGUMENTS}
        # A listing's prefix, for policies that grant a prefix (s3:prefix).
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 and isinstance(args[1], str) else "")
        for i, (checked, bucket) in enumerate(pairs):
            extra = {"prefix": prefix} if checked == "list" else {}
            reason = store.access_denial(
                principal, checked, bucket, key if i == 0 else None, **extra, **(locks if i == 0 else {})
            )
            if reason is not None:
                raise AccessDenied(reason)

    def wrap(method):
        @functools.wraps(method)
        def inner(self, *args: Any, **kwargs: Any) -> Any:
            principal = kwargs.get("principal")
            try:
                if principal is not None:
                    check(self, principal, args, kwargs)
                result = method(self, *args, **kwargs)
            except StoreError as exc:
                denied = isinstance(exc, (ObjectLocked, AccessDenied))
                if denied or (principal is not None and not only_denials):
                    # The refusal is the detail, also where the target names one (the settings changed).
                    fields = dict(name(args, kwargs, None), detail=str(exc))
                    self.record_audit(action, principal, "denied" if denied else "failed", durable or denied, **fields)
                raise
            if principal is not None and not only_denials:
                self.record_audit(action, principal, "ok", durable, **name(args, kwargs, result))
            return result

        return inner

    return wrap


def guarded(action: str, **options: Any):
    """:func:`audited` for lookups and listings: the rights are checked, only refusals are logged."""
    return audited(action, only_denials=True, **options)
