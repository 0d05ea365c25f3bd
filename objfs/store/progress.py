"""Progress of a long command (scrub, heal, rebuild-index, migrate, lifecycle runs) on stderr: rate and ETA.

On a terminal the `rich` library draws one live line in place (a bar, then
done/total, rate, bytes and ETA; redrawn at most five times a second);
elsewhere (journald, a cron mail, a pipe) a plain line is written every
``interval`` seconds (default 10, or ``OBJFS_PROGRESS_INTERVAL``), so a
run of hours still says how far it got. A command shows progress when
stderr is a terminal or when asked (``--progress``); otherwise a
:class:`Progress` costs a lock and an addition per call and prints nothing.

API::

    with Progress(total=n, label="heal", unit="objects", total_bytes=b, enabled=args.progress) as p:
        for item in work:
            ...
            p.advance(1, nbytes=size)        # thread-safe
    # or p.close() when not used as a context manager; p.set_total(n) once the total is known.

Guarantee: output only ever goes to the given stream (stderr by default,
never stdout, which carries the command's JSON report), and every method is
safe to call from several worker threads. ``rich`` is imported only when a
terminal is drawn on, so a cron run or a pipe pays nothing for it.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import rich.progress

DEFAULT_INTERVAL = 10.0  # seconds between plain lines when not on a terminal
TTY_INTERVAL = 0.2


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """``--progress``: show progress even when stderr is not a terminal (plain periodic lines)."""
    parser.add_argument("--progress", action="store_true", help="report rate and ETA on stderr even when it is not a terminal")


def duration_text(seconds: float) -> str:
    """A duration as a person reads it: ``3d04h``, ``2h05m``, ``4m07s``, ``12s``."""
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


class Progress:
    """Counts done (and bytes), with rate and ETA; see the module docstring for when it prints."""

    def __init__(
        self,
        total: int | None = None,
        label: str = "",
        *,
        unit: str = "items",
        total_bytes: int | None = None,
        enabled: bool = False,
        stream: TextIO | None = None,
        interval: float | None = None,
        done: int = 0,
    ) -> None:
        self.total, self.total_bytes = total, total_bytes
        self.label, self.unit = label, unit
        self.stream = sys.stderr if stream is None else stream
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.shown = self.tty or enabled
        if interval is None:
            interval = TTY_INTERVAL if self.tty else float(os.environ.get("OBJFS_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
        self.interval = interval
        self.done, self.bytes = done, 0
        self._resumed_at = done  # what a resumed run had done before: not part of this run's rate
        self.start = time.monotonic()
        self._last = self.start
        self._lock = threading.Lock()
        self._closed = False
        self._live: rich.progress.Progress | None = None
        self._task: Any = None
        if self.tty and self.shown:
            self._start_rich()

    def _start_rich(self) -> None:
        """A rich live display on the terminal; the text column is :meth:`line`, so both forms say the same."""
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as RichProgress

        try:
            width = os.get_terminal_size(self.stream.fileno()).columns or 100
        except (AttributeError, OSError, ValueError):
            width = 100
        # force_terminal: the stream is a tty (checked above) even when TERM is unset or "dumb" (a bare pty);
        # no redirect of stdout/stderr: stdout carries the command's JSON report.
        console = Console(file=self.stream, force_terminal=True, width=max(width, 40), highlight=False)
        columns: list[Any] = [BarColumn(bar_width=24)] if self.total is not None else []
        columns.append(TextColumn("{task.fields[text]}", markup=False))
        self._live = RichProgress(*columns, console=console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
        self._task = self._live.add_task(self.label, total=self.total, completed=self.done, text=self.line())
        self._live.start()

    @classmethod
    def to(cls, stream: TextIO | None, label: str, total: int | None, *, done: int = 0) -> Progress:
        """The engine's form: shown on ``stream`` (redrawn if a terminal, plain lines otherwise); None is silent."""
        progress = cls(total, label, enabled=stream is not None, stream=stream, done=done)
        if stream is None:
            progress.shown = False  # background work (a worker's scrub) never draws, even on a terminal
        return progress

    def set_total(self, total: int | None, total_bytes: int | None = None) -> None:
        """The total, once known (a scan that counts first)."""
        with self._lock:
            self.total = total
            if total_bytes is not None:
                self.total_bytes = total_bytes
            if self._live is not None:
                if total is not None and not any(type(c).__name__ == "BarColumn" for c in self._live.columns):
                    from rich.progress import BarColumn

                    self._live.columns = (BarColumn(bar_width=24), *self._live.columns)
                self._live.update(self._task, total=total)

    def advance(self, n: int = 1, *, nbytes: int = 0) -> None:
        """``n`` more done (and ``nbytes`` more bytes); draws when the interval has passed."""
        with self._lock:
            self.done += n
            self.bytes += nbytes
            if not self.shown:
                return
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self._draw(now, final=False)

    def line(self, now: float | None = None) -> str:
        """The current progress as text: done/total, rate, bytes, ETA."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.start, 1e-6)
        parts = [f"{self.done}/{self.total}" if self.total is not None else f"{self.done}", self.unit]
        text = " ".join(parts) + f"  {(self.done - self._resumed_at) / elapsed:.1f} {self.unit}/s"
        if self.bytes or self.total_bytes:
            of = f"/{_size(self.total_bytes)}" if self.total_bytes else ""
            text += f"  {_size(self.bytes)}{of}  {_size(self.bytes / elapsed)}/s"
        eta = self._eta(elapsed)
        if eta is not None:
            text += f"  ETA {duration_text(eta)}"
        elif self.total is not None or self.total_bytes:
            text += "  ETA ?"  # a total but no rate yet
        text += f"  elapsed {duration_text(elapsed)}"
        return f"{self.label}: {text}" if self.label else text

    def _eta(self, elapsed: float) -> float | None:
        if self.total_bytes and self.bytes:
            return max(self.total_bytes - self.bytes, 0) * elapsed / self.bytes
        if self.total and self.done > self._resumed_at:
            return max(self.total - self.done, 0) * elapsed / (self.done - self._resumed_at)
        return None

    def _draw(self, now: float, *, final: bool) -> None:
        text = self.line(now)
        try:
            if self._live is not None:
                self._live.update(self._task, completed=self.done, text=text)
                if final:
                    self._live.stop()  # draws the last line once more, leaves it and moves below it
                    self._live = None
                else:
                    self._live.refresh()
                return
            if self.tty:  # a terminal that rich could not take (stream without a descriptor): draw it ourselves
                self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
            else:
                self.stream.write(text + ("  done" if final else "") + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stderr gone: progress is not worth failing the command
            self.shown = False

    def close(self) -> None:
        """Print the final line (when shown); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.shown:
                self._draw(time.monotonic(), final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
