"""Several gateway processes behind one port (``[dicom] processes``): real associations, real store."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dicom_scu as scu
import pytest
from dicomtest import REPO, dataset_bytes, echo, free_port, sop_uid
from pynetdicom import AE

from objfs.dicom.synth import write_study
from objfs.stores import Store, init_store

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SUMMARY = re.compile(r"objfs dicom\[(?P<pid>\d+)\]: INFO objfs\.dicom: association (?P<calling>\S+)@127\.0\.0\.1:(?P<port>\d+) ")


def _set_processes(store: Path, value: str) -> None:
    config = store / "objfs.toml"
    config.write_text(config.read_text().replace("[dicom]\n", f"[dicom]\nprocesses = {value}\n", 1))


def _start(store: Path, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "objfs.cli", "dicom", str(store), "--port", str(port), "--host", "127.0.0.1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited: {log.read_text()}")
        try:
            if echo(port):
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("gateway did not answer C-ECHO")


def _two_process_gateway(tmp_path: Path) -> tuple[Path, Path, subprocess.Popen, int]:
    """A new store served by a gateway of two processes: ``(store, log, process, port)``."""
    store = tmp_path / "store"
    init_store(store).close()
    _set_processes(store, "2")
    log = tmp_path / "gateway.log"
    proc, port = _start(store, log)
    return store, log, proc, port


def _summaries(log: Path, calling: str, expected: int) -> list[dict[str, str]]:
    """The summary lines of ``calling``'s associations, waiting for them (written when a connection closes)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [m.groupdict() for m in SUMMARY.finditer(log.read_text()) if m["calling"] == calling]
        if len(lines) >= expected or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_concurrent_associations_are_served_by_different_processes_and_are_durable(tmp_path: Path) -> None:
    study, paths = write_study(tmp_path / "s", instances=2, size=64)
    store, log, proc, port = _two_process_gateway(tmp_path)
    try:
        # Both associations are open at once before either stores anything.
        assocs = []
        for calling in ("SCU1", "SCU2"):
            ae = AE(ae_title=calling)
            ae.add_requested_context(*scu._meta(paths[0]))
            assoc = ae.associate("127.0.0.1", port, ae_title="OBJFS")
            assert assoc.is_established
            assocs.append(assoc)
        statuses = [int(assoc.send_c_store(path).Status) for assoc, path in zip(assocs, paths, strict=True)]
        assert statuses == [0, 0]
        for assoc in assocs:
            assoc.release()
        found, final = scu.find(port, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study, "SOPInstanceUID": ""})
        assert final == 0 and len(found) == 2
        lines = [_summaries(log, calling, 1) for calling in ("SCU1", "SCU2")]
        assert all(len(found) == 1 for found in lines), log.read_text()
        pids = {found[0]["pid"] for found in lines}
        assert len(pids) == 2, f"both associations were served by one process: {log.read_text()}"
        assert str(proc.pid) in pids  # the listening process serves too
    finally:
        # No clean stop: every process is killed, so what was acknowledged must already be on disk.
        for pid in {int(m["pid"]) for m in SUMMARY.finditer(log.read_text())} | {proc.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    with Store.open(store) as reopened:
        keys = [o.record["key"] for o in reopened.list_objects("pacs").objects]
        for path in paths:
            key = next(k for k in keys if k.endswith(f"{sop_uid(path)}.dcm"))
            body = reopened.get_object_bytes("pacs", key)
            assert hashlib.sha256(dataset_bytes(body)).hexdigest() == scu.dataset_sha256(path)


def test_associations_one_after_another_take_turns(tmp_path: Path) -> None:
    """Each process's count of live associations falls when one ends: none is left out after its first."""
    _store, log, proc, port = _two_process_gateway(tmp_path)
    try:
        for n in range(4):
            assert echo(port, calling=f"SEQ{n}")
            assert len(_summaries(log, f"SEQ{n}", 1)) == 1
            time.sleep(0.2)  # the serving process has told the listener the association ended
        pids = [_summaries(log, f"SEQ{n}", 1)[0]["pid"] for n in range(4)]
    finally:
        proc.terminate()
        proc.wait(60)
    assert len(set(pids[1:])) == 2, pids  # the listening process serves again after its first association


@pytest.mark.parametrize("value", ["0", "-1", "65", '"two"', "true", "1.5"])
def test_a_bad_process_count_is_refused_at_start(tmp_path: Path, value: str) -> None:
    store = tmp_path / "store"
    init_store(store).close()
    _set_processes(store, value)
    cmd = [sys.executable, "-m", "objfs.cli", "dicom", str(store), "--port", str(free_port()), "--host", "127.0.0.1"]
    done = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "processes" in done.stderr, done.stderr


def test_a_worker_that_dies_stops_the_gateway(tmp_path: Path) -> None:
    _store, log, proc, port = _two_process_gateway(tmp_path)
    try:
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 1
        os.kill(int(children[0]), signal.SIGKILL)
        assert proc.wait(30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "DICOM gateway process 1" in log.read_text()
