"""Real mounts: ``objfs mount STORE MNT --foreground`` as a subprocess.

A mount that does not come up fails the test with the process's stderr;
nothing here is ever skipped. Teardown always unmounts (SIGTERM, then
``fusermount3 -uz``) so one failing test cannot leave a hung mount behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class Mount:
    """One mount process of a store."""

    def __init__(self, store: Path, path: Path) -> None:
        self.store = store
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = store.parent / "mount.log"

    def start(self, timeout: float = 20.0) -> Mount:
        self.path.mkdir(exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        log = open(self._log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "objfs.cli", "mount", str(self.store), str(self.path), "--foreground"],
            stdout=log,
            stderr=log,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the mount did not come up; its output:\n{self.log()}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def stop(self) -> None:
        """Unmount cleanly; fails the test if the mount process did not exit cleanly on SIGTERM."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if os.path.ismount(self.path) or _dead_mount(self.path):
            subprocess.run(["fusermount3", "-uz", str(self.path)], capture_output=True)

    def kill(self) -> None:
        """SIGKILL the mount process (a crash), then detach the dead mount."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        subprocess.run(["fusermount3", "-uz", str(self.path)], capture_output=True)


def _dead_mount(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError:
        return True
    return False


@pytest.fixture
def mount(store_path: Path, tmp_path: Path):
    """A mounted store (6 directory drives, EC 4+2) with bucket ``pacs``."""
    m = Mount(store_path, tmp_path / "mnt").start()
    try:
        (m.path / "pacs").mkdir()
        yield m
    finally:
        m.stop()


@pytest.fixture
def mounter():
    """``mounter(store, mountpoint)`` -> an unstarted Mount, always stopped at teardown."""
    made: list[Mount] = []

    def make(store: Path, path: Path) -> Mount:
        m = Mount(store, path)
        made.append(m)
        return m

    try:
        yield make
    finally:
        for m in made:
            m.stop()
