"""Fault injection through the real fronts: SIGKILL of the FUSE mount, the DICOM gateway and
the S3 sidecar at random moments while clients write and readers stream the same keys.

The engine-level suite (tests/store/test_faults.py) kills engine callers; here
the process that dies is the front itself, with real clients on the other side
(files written through a real mount, C-STOREs from a pynetdicom SCU, boto3).
After every round:

* every acknowledged change holds: a key reads back as its last acknowledged
  state or a later unacknowledged one, never an older one, never corrupt
  (every body proves its own integrity, tests/store/trusthelpers.py);
* no reader got wrong or silently short bytes (a visible error is allowed);
* nothing of the dead front is left in the store's spool once the store is
  reopened, and ``objfs scrub`` trusts the index and lost nothing;

and after the last round ``rebuild-index`` on a copy of the drives gives the
live state of the index. Rounds and sleeps are bounded: each test takes well
under a minute on a loaded machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE / "store"), str(HERE / "dicom"), str(HERE / "s3")]

import dicom_scu as scu  # noqa: E402
from dicomtest import configure, dataset_bytes, sop_uid, start_gateway, stop_gateway  # noqa: E402
from front_fault_workers import FUSE_KEYS  # noqa: E402
from s3helpers import create_key, free_port  # noqa: E402
from trusthelpers import body, live_state, verify  # noqa: E402

from objfs.store import NoSuchKey  # noqa: E402
from objfs.stores import Store  # noqa: E402

WORKERS = str(HERE / "front_fault_workers.py")
ROUNDS = 4


def _fuse_mount_class() -> type:
    """The Mount helper of tests/fuse/conftest.py (a conftest is not importable by name)."""
    spec = importlib.util.spec_from_file_location("fuse_mount_helpers", HERE / "fuse" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Mount


class Worker:
    """One worker process of front_fault_workers.py and the lines it printed."""

    def __init__(self, *args: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, WORKERS, *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        self.lines: list[str] = []
        self.errors = ""
        self._out = threading.Thread(target=self._collect, daemon=True)
        self._out.start()

    def _collect(self) -> None:
        for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))

    def finish(self, timeout: float = 0) -> None:
        """Wait up to ``timeout`` for the worker to exit by itself, then SIGKILL it."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._out.join()
        self.errors = self.proc.stderr.read().decode(errors="replace")

    def count(self, word: str) -> int:
        return sum(1 for line in self.lines if line.split()[0] == word)


def _acceptable(lines: list[str], state: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Per key, the states it may be in after ``lines`` (``-``: absent).

    An ACK leaves exactly its state; an operation that failed or was cut off
    may or may not have happened, so its state joins the acceptable ones
    until the next ACK of that key.
    """
    state = {} if state is None else state
    pending: tuple[str, str] | None = None
    for line in lines:
        words = line.split()
        if words[0] == "BEGIN":
            pending = (words[1], words[2])
        elif words[0] == "ACK":
            state[words[1]] = {words[2]}
            pending = None
        elif words[0] == "FAIL":
            state.setdefault(words[1], {"-"}).add(words[2])
            pending = None
        elif words[0] == "REFUSED":  # never sent: no effect
            pending = None
    if pending is not None:
        state.setdefault(pending[0], {"-"}).add(pending[1])
    return state


def _check_keys(store, bucket: str, state: dict[str, set[str]]) -> None:
    for key, tags in state.items():
        try:
            data = store.get_object_bytes(bucket, key)
        except NoSuchKey:
            assert "-" in tags, f"{bucket}/{key} is gone; acceptable: {sorted(tags)}"
            continue
        verify(data)
        assert any(data == body(t, len(data)) for t in tags if t != "-"), (
            f"{bucket}/{key} is not its last acknowledged state or a later one (acceptable: {sorted(tags)})"
        )


def _check_files(folder: Path, state: dict[str, set[str]]) -> None:
    for key, tags in state.items():
        try:
            data = (folder / key).read_bytes()
        except FileNotFoundError:
            assert "-" in tags, f"{key} is gone from the mount; acceptable: {sorted(tags)}"
            continue
        verify(data)
        assert any(data == body(t, len(data)) for t in tags if t != "-"), f"{key} on the mount: not an acceptable state"


def _spool_files_of(store_path: Path, pid: int) -> list[Path]:
    spool = store_path / "spool"
    return [p for p in spool.rglob("*") if p.is_file() and p.name.startswith(f"{pid}-")] if spool.is_dir() else []


def _scrub_trusts(store_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "scrub", str(store_path), "--json"],
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    report = json.loads(out.stdout)
    assert report["index_trusted"] and not report["lost"], report


def _rebuild_matches(store_path: Path, tmp_path: Path) -> None:
    """``rebuild-index`` on a copy of the drives (no index, run or spool) gives the index's live state."""
    with Store.open(store_path) as store:
        expected = live_state(store)
    copy = tmp_path / "copy"
    shutil.copytree(store_path, copy, ignore=shutil.ignore_patterns("index", "run", "spool"))
    subprocess.run(
        [sys.executable, "-m", "objfs.cli", "rebuild-index", str(copy)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=True,
        capture_output=True,
        timeout=120,
    )
    with Store.open(copy) as rebuilt:
        assert live_state(rebuilt) == expected


def _no_bad_reads(readers: list[Worker]) -> int:
    lines = [line for r in readers for line in r.lines]
    bad = [line for line in lines if line.startswith("BAD")]
    assert not bad, bad[:5]
    for r in readers:
        assert "Traceback" not in r.errors, r.errors
    return sum(1 for line in lines if line.startswith("OK"))


# -- FUSE ------------------------------------------------------------------------


def test_fuse_mount_sigkilled_while_files_are_rewritten(store_path: Path, tmp_path: Path) -> None:
    Mount = _fuse_mount_class()
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
    rng = random.Random(9)
    mnt = tmp_path / "mnt"
    state: dict[str, set[str]] = {}
    acked = 0
    readers = [Worker("engine-read", store_path, "pacs", *FUSE_KEYS) for _ in range(2)]
    try:
        for round_ in range(ROUNDS):
            mount = Mount(store_path, mnt).start()
            _check_files(mnt / "pacs", state)  # what the dead mount acknowledged, seen through the new one
            writer = Worker("fuse-write", mnt, round_ + 1)
            time.sleep(0.6 + rng.random() * 1.6)
            dead = mount.proc.pid
            try:
                mount.kill()  # SIGKILL mid-write, then `fusermount3 -uz` of the dead mount
            finally:
                writer.finish(10)  # its next call on the dead mount fails: it exits
            assert "Traceback" not in writer.errors, writer.errors
            acked += writer.count("ACK")
            _acceptable(writer.lines, state)
            with Store.open(store_path) as store:  # reopening sweeps the dead mount's spool
                assert _spool_files_of(store_path, dead) == []
                _check_keys(store, "pacs", state)
            _scrub_trusts(store_path)
    finally:
        for reader in readers:
            reader.finish()
    assert acked >= ROUNDS, f"only {acked} acknowledged writes: the test did not exercise the mount"
    assert _no_bad_reads(readers) >= 5
    _rebuild_matches(store_path, tmp_path)


# -- DICOM -----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dicom_gateway_sigkilled_while_receiving(store_path: Path, tmp_path: Path) -> None:
    configure(store_path, allowed=["TESTSCU"])
    sources = tmp_path / "sent"
    sources.mkdir()
    rng = random.Random(11)
    acked: set[str] = set()
    gw = start_gateway(store_path)
    try:
        for round_ in range(ROUNDS):
            sender = Worker("dicom-store", gw.port, sources, round_ + 1)
            time.sleep(0.8 + rng.random() * 1.5)
            gw.proc.send_signal(signal.SIGKILL)
            gw.proc.communicate()
            dead = gw.proc.pid
            sender.finish(15)
            assert "Traceback" not in sender.errors, sender.errors
            round_acked = {line.split()[1] for line in sender.lines if line.startswith("ACK")}
            acked |= round_acked
            study, series = next(line.split()[1:] for line in sender.lines if line.startswith("STUDY"))
            gw = start_gateway(store_path)  # opens the store: the dead gateway's receive spool is swept
            assert _spool_files_of(store_path, dead) == []
            assert list((store_path / "spool" / "dicom-recv").iterdir()) == []

            # every stored instance is complete and exactly what was sent; every acknowledged one is stored
            with Store.open(store_path) as store:
                stored = {}
                for obj in store.list_objects("pacs").objects:
                    data = store.get_object_bytes("pacs", obj.key)
                    sop = obj.key.rsplit("/", 1)[1].removesuffix(".dcm")
                    assert sop_uid(data) == sop
                    assert dataset_bytes(data) == dataset_bytes((sources / f"{sop}.dcm").read_bytes()), obj.key
                    stored[sop] = obj.key
            assert acked <= stored.keys(), f"acknowledged but lost: {sorted(acked - stored.keys())}"

            found, final = scu.find(
                gw.port,
                {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": ""},
            )
            assert final == 0
            found_uids = {str(ds.SOPInstanceUID) for ds in found}
            assert round_acked <= found_uids <= stored.keys()
            if round_acked:
                got, statuses = scu.get(
                    gw.port,
                    {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study},
                    [("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")],
                )
                assert statuses and statuses[-1] == 0
                for sop in round_acked:
                    assert got[sop] == dataset_bytes((sources / f"{sop}.dcm").read_bytes())
            _scrub_trusts(store_path)
    finally:
        err = stop_gateway(gw)
    assert "Traceback" not in err, err
    assert len(acked) >= ROUNDS, f"only {len(acked)} acknowledged C-STOREs"
    _rebuild_matches(store_path, tmp_path)


# -- S3 --------------------------------------------------------------------------


class Sidecar:
    """An ``s3sidecar`` process on a fixed loopback port, restartable on that port."""

    def __init__(self, store: Path, port: int) -> None:
        self.store, self.port = store, port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        log = open(self.store.parent / "s3sidecar.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "s3sidecar.server", str(self.store), "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.store.parent / "s3sidecar.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    if sock.recv(12).startswith(b"HTTP/1.1"):
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("s3sidecar did not answer")

    def kill(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_s3_sidecar_sigkilled_during_put_delete_and_multipart(store_path: Path, tmp_path: Path) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
    key = create_key(store_path, "--name", "admin")
    sidecar = Sidecar(store_path, free_port())
    sidecar.start()
    rng = random.Random(13)
    credentials = (sidecar.url, key.access_key, key.secret_key)
    readers = [Worker("s3-read", *credentials, 100 + i) for i in range(2)]
    mutator = Worker("s3-mutate", *credentials, 1)
    try:
        for _ in range(ROUNDS):
            time.sleep(0.8 + rng.random() * 1.6)
            dead = sidecar.kill()
            time.sleep(0.1 + rng.random() * 0.2)  # requests to a dead port fail: the mutator's log is final
            lines = list(mutator.lines)
            with Store.open(store_path) as store:
                assert _spool_files_of(store_path, dead) == []
                _check_keys(store, "pacs", _acceptable(lines))
            _scrub_trusts(store_path)
            sidecar.start()  # the same port: clients carry on
    finally:
        mutator.finish()
        for reader in readers:
            reader.finish()
        sidecar.stop()
    assert "Traceback" not in mutator.errors, mutator.errors
    assert mutator.count("ACK") >= 2 * ROUNDS, "too few acknowledged S3 operations"
    assert _no_bad_reads(readers) >= 5
    with Store.open(store_path) as store:
        _check_keys(store, "pacs", _acceptable(mutator.lines))
    _rebuild_matches(store_path, tmp_path)
