"""Finding 7: an interrupted C-STORE leaves nothing behind, and the gateway keeps serving.

Real associations against a real ``objfs dicom`` process: a separate SCU
process starts a multi-MiB C-STORE and interrupts it mid-transfer (A-ABORT,
A-RELEASE, TCP reset, or is SIGKILLed itself); the gateway's receive spool
must be empty shortly after, nothing stored, nothing found by C-FIND. A
gateway SIGKILLed mid-receive leaves its partial file, which the next
opening of the store removes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dicom_scu as scu
import pytest
from dicomtest import REPO, configure, echo, start_gateway, stop_gateway

from objfs.dicom.synth import write_large_instance, write_study
from objfs.stores import Store, init_store

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

INTERRUPT_SCU = Path(__file__).with_name("interrupt_scu.py")
FRAME = 256 << 10  # 8 MiB instance in 32 frames: 8 PDUs of 1 MiB, interrupted after 3


@pytest.fixture
def large(tmp_path: Path):
    path = tmp_path / "wsi.dcm"
    header = write_large_instance(path, frames=32, frame_bytes=FRAME)
    return path, header


def spool_files(store_path: Path) -> list[Path]:
    area = store_path / "spool" / "dicom-recv"
    return sorted(area.iterdir()) if area.is_dir() else []


def wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def start_interrupting_scu(port: int, path: Path, mode: str) -> subprocess.Popen:
    """Start the SCU; returns once it has sent part of the dataset and holds the rest back (until ``go``)."""
    proc = subprocess.Popen(
        [sys.executable, str(INTERRUPT_SCU), str(port), str(path), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    line = proc.stdout.readline().decode().strip()
    assert line == "MID", f"SCU did not reach mid-transfer: {line!r} {proc.stderr.read().decode() if proc.poll() else ''}"
    return proc


def go(proc: subprocess.Popen) -> None:
    proc.stdin.write(b"go\n")
    proc.stdin.flush()


def partial_spooled(store_path: Path) -> bool:
    """A receive spool file holding some, not all, of the dataset exists (proves the test interrupts mid-transfer)."""
    return any(p.stat().st_size > FRAME for p in spool_files(store_path))


@pytest.mark.parametrize("mode", ["abort", "release", "reset", "kill-peer"])
def test_interrupted_c_store_leaves_nothing_and_the_gateway_serves_on(mode: str, tmp_path: Path, large) -> None:
    path, header = large
    store_path = tmp_path / "store"
    init_store(store_path).close()
    configure(store_path, allowed=["TESTSCU"])
    gw = start_gateway(store_path)
    try:
        proc = start_interrupting_scu(gw.port, path, "hang" if mode == "kill-peer" else mode)
        try:
            assert wait_for(lambda: partial_spooled(store_path)), "no partial receive spool file seen"
            if mode == "kill-peer":
                proc.send_signal(signal.SIGKILL)
            else:
                go(proc)
                assert proc.stdout.readline().decode().strip() == "DONE"
        finally:
            proc.kill()
            proc.wait(10)
        assert wait_for(lambda: spool_files(store_path) == []), f"left behind: {spool_files(store_path)}"

        # nothing stored, nothing found
        found, final = scu.find(
            gw.port,
            {
                "QueryRetrieveLevel": "IMAGE",
                "StudyInstanceUID": header.StudyInstanceUID,
                "SeriesInstanceUID": "",
                "SOPInstanceUID": header.SOPInstanceUID,
            },
        )
        assert (found, final) == ([], 0)
        with Store.open(store_path) as store:
            assert store.list_objects("pacs").objects == []

        # the gateway still serves: a complete C-STORE after the interrupted one is stored and found
        assert echo(gw.port)
        _, (small,) = write_study(tmp_path / "after", instances=1)
        assert scu.store_files(gw.port, [small]) == [0]
        found, _ = scu.find(gw.port, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "PatientID": ""})
        assert len(found) == 1
        assert spool_files(store_path) == []
    finally:
        err = stop_gateway(gw)
    # pynetdicom logs a peer's TCP reset with the exception's traceback; nothing else may fail
    tracebacks = err.split("Traceback")[1:]
    assert all(mode == "reset" and "ConnectionResetError" in tb for tb in tracebacks), err


def test_gateway_killed_mid_receive_partial_removed_when_store_next_opened(tmp_path: Path, large) -> None:
    path, _ = large
    store_path = tmp_path / "store"
    init_store(store_path).close()
    configure(store_path, allowed=["TESTSCU"])
    gw = start_gateway(store_path)
    proc = start_interrupting_scu(gw.port, path, "hang")
    try:
        assert wait_for(lambda: partial_spooled(store_path))
        # Every gateway process at once (its worker processes first: they would clean up after a dead parent).
        pids = [int(p) for p in subprocess.run(["pgrep", "-P", str(gw.proc.pid)], capture_output=True, text=True).stdout.split()]
        for pid in [*pids, gw.proc.pid]:
            os.kill(pid, signal.SIGKILL)
        gw.proc.wait(10)
        assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids))  # not our children: gone once reaped
        (partial,) = spool_files(store_path)
        # owned: named after the gateway process that received it
        assert any(partial.name.startswith(f"{pid}-") for pid in [*pids, gw.proc.pid])
    finally:
        proc.kill()
        proc.wait(10)
        gw.proc.communicate()
    time.sleep(0.2)
    assert partial.exists()  # nobody removes it while the store is closed...
    with Store.open(store_path):
        pass
    assert not partial.exists()  # ...the next opening of the store does
