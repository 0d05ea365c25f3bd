"""DICOM gateway benchmark: objfs against Orthanc, both durable, in the same run.

The peer is Orthanc from Debian's package (installed on demand; skipped with a
loud message if that fails), run with its own storage under the bench's
temporary directory and ``SyncStorageArea: true`` (it fsyncs every file), as
objfs answers each C-STORE only after the durable commit (fragments fsynced on
k+m drives, LMDB committed). Both servers are driven by the same clients:

* C-STORE: dcmtk's ``storescu``, a CT study of N 512 KiB instances on one
  association, and 4 ``storescu`` processes (4 associations) of N/3 each;
* C-GET / C-MOVE of the whole N-instance study (``getscu`` to a directory,
  ``movescu`` to a ``storescp`` destination);
* C-FIND at STUDY level (``findscu --repeat``, one association), and
  association set-up (A-ASSOCIATE-RQ to AC, from a pynetdicom SCU in this
  process, median of many tries).

All dcmtk tools (and Orthanc, whose DICOM side is dcmtk) run with
TCP_NODELAY=1: Debian's dcmtk leaves Nagle on otherwise. The last column is
objfs' speed relative to Orthanc's (rate ratio, or Orthanc's time over
objfs'): 1.00x or more means objfs is at least as fast.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ensure_debian_package, free_port, ratio, table

ENV = dict(os.environ, TCP_NODELAY="1")
REPO = Path(__file__).resolve().parent.parent
DEST_AET = "BENCHDEST"
ASSOCIATIONS = 4


def _echo_ok(port: int, aet: str) -> bool:
    done = subprocess.run(["echoscu", "-aec", aet, "127.0.0.1", str(port)], env=ENV, capture_output=True)
    return done.returncode == 0


def _wait_port(port: int, aet: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        if _echo_ok(port, aet):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers C-ECHO on port {port}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Server:
    """A DICOM server under test: name, called AE title, port, process."""

    name = ""
    aet = ""

    def __init__(self, work: Path, dest_port: int) -> None:
        self.work = work
        self.dest_port = dest_port
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


class ObjfsGateway(Server):
    name = "objfs"
    aet = "OBJFS"

    def start(self) -> None:
        from objfs.store import init_store

        store = self.work / "objfs-store"
        init_store(store).close()
        config = store / "objfs.toml"
        # [dicom.destinations] is the last table of a new store's config.
        config.write_text(config.read_text() + f'"{DEST_AET}" = "127.0.0.1:{self.dest_port}"\n')
        log = open(self.work / "objfs-gateway.log", "wb")  # noqa: SIM115 - kept open for the process
        cmd = [sys.executable, "-m", "objfs.cli", "dicom", str(store), "--port", str(self.port), "--host", "127.0.0.1"]
        self.proc = subprocess.Popen(cmd, env=dict(ENV, PYTHONPATH=str(REPO)), stdout=log, stderr=log, cwd=REPO)
        _wait_port(self.port, self.aet, self.proc)


class Orthanc(Server):
    name = "Orthanc"
    aet = "ORTHANC"

    def start(self) -> None:
        root = self.work / "orthanc"
        root.mkdir()
        config = {
            "Name": "objfs-bench",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "StorageCompression": False,
            "SyncStorageArea": True,  # fsync every file, as a PACS should
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": free_port(),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "UnknownSopClassAccepted": True,
            "DicomModalities": {"dest": [DEST_AET, "127.0.0.1", self.dest_port]},
            "DicomScpTimeout": 120,
            "StableAge": 3600,
        }
        path = root / "orthanc.json"
        path.write_text(json.dumps(config, indent=1))
        log = open(self.work / "orthanc.log", "wb")  # noqa: SIM115 - kept open for the process
        self.proc = subprocess.Popen(["Orthanc", str(path)], env=ENV, stdout=log, stderr=log, cwd=root)
        _wait_port(self.port, self.aet, self.proc)


# -- workloads -------------------------------------------------------------------


def storescu(port: int, aet: str, files: list[Path], parallel: int = 1) -> float:
    chunks = [files[i::parallel] for i in range(parallel)]
    start = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aec", aet, "127.0.0.1", str(port), *map(str, c)], env=ENV) for c in chunks]
    failed = [p for p in procs if p.wait() != 0]
    if failed:
        raise RuntimeError("storescu failed")
    return time.perf_counter() - start


def getscu(port: int, aet: str, study_uid: str, out: Path, expected: int) -> float:
    out.mkdir()
    cmd = ["getscu", "-S", "-aec", aet, "-od", str(out), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]
    start = time.perf_counter()
    subprocess.run([*cmd, "127.0.0.1", str(port)], env=ENV, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    got = len(list(out.iterdir()))
    if got != expected:
        raise RuntimeError(f"getscu received {got} of {expected} instances")
    return seconds


def movescu(port: int, aet: str, study_uid: str, dest_port: int, out: Path, expected: int) -> float:
    """C-MOVE the study to a storescp (AE DEST_AET) writing to ``out``; seconds until movescu returns."""
    out.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", DEST_AET, "-od", str(out), str(dest_port)], env=ENV)
    try:
        _wait_port(dest_port, DEST_AET, scp)
        cmd = ["movescu", "-S", "-aec", aet, "-aem", DEST_AET, "-k", "QueryRetrieveLevel=STUDY"]
        start = time.perf_counter()
        subprocess.run(
            [*cmd, "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1", str(port)], env=ENV, check=True, capture_output=True
        )
        seconds = time.perf_counter() - start
    finally:
        _stop(scp)
    got = len(list(out.iterdir()))
    if got != expected:
        raise RuntimeError(f"the move destination received {got} of {expected} instances")
    return seconds


def _nodelay() -> list[Any]:
    """Handlers giving this process' SCU sockets TCP_NODELAY (a delayed ACK costs ~40 ms per query otherwise)."""
    from pynetdicom import evt

    from objfs.dicom.server import set_nodelay

    return [(evt.EVT_CONN_OPEN, set_nodelay)]


def association_ms(port: int, aet: str, tries: int) -> float:
    """Median A-ASSOCIATE-RQ -> AC time, in ms, proposing Verification and CT Image Storage."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, Verification

    ae = AE(ae_title="BENCHSCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    times = []
    for _ in range(tries):
        start = time.perf_counter()
        assoc = ae.associate("127.0.0.1", port, ae_title=aet, evt_handlers=_nodelay())
        times.append(time.perf_counter() - start)
        if not assoc.is_established:
            raise RuntimeError("association refused")
        assoc.release()
    return statistics.median(times) * 1000


def find_ms(port: int, aet: str, tries: int, expected: int) -> float:
    """Time of a STUDY-level C-FIND matching every study (a worklist query), in ms.

    dcmtk's findscu repeats the query ``tries`` times on one association; the
    time of a single query (association set-up and process start included)
    is subtracted, so this is the time per query alone.
    """
    keys = ["-k", "QueryRetrieveLevel=STUDY"]
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "AccessionNumber", "ModalitiesInStudy"):
        keys += ["-k", keyword]
    keys += ["-k", "NumberOfStudyRelatedInstances"]

    def run(times: int) -> float:
        cmd = ["findscu", "-S", "--repeat", str(times), "-aec", aet, *keys, "127.0.0.1", str(port)]
        start = time.perf_counter()
        done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
        answers = done.stderr.count("Find Response") + done.stdout.count("Find Response")
        if answers != times * expected:
            print(f"!! C-FIND on {aet}: {answers} answers to {times} queries, not {times * expected}", flush=True)
        return seconds

    one = min(run(1) for _ in range(3))
    return max(run(tries + 1) - one, 0.0) / tries * 1000


def run_server(server: Server, studies: dict[str, Any], work: Path, tries: int) -> dict[str, float]:
    """Every workload against one server; rates in instances/s, times in seconds or ms."""
    one, many = studies["one"], studies["many"]
    out: dict[str, float] = {}
    server.start()
    try:
        out["store1"] = len(one[1]) / storescu(server.port, server.aet, one[1])
        out["store4"] = len(many[1]) / storescu(server.port, server.aet, many[1], ASSOCIATIONS)
        out["get"] = getscu(server.port, server.aet, one[0], work / f"{server.name}-get", len(one[1]))
        out["move"] = movescu(server.port, server.aet, one[0], server.dest_port, work / f"{server.name}-move", len(one[1]))
        out["find"] = find_ms(server.port, server.aet, tries, expected=2)
        out["assoc"] = association_ms(server.port, server.aet, tries)
    finally:
        server.stop()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dicom_bench")
    parser.add_argument("--quick", action="store_true", help="60 slices instead of 300")
    parser.add_argument("--slices", type=int, help="instances of the one-association study")
    parser.add_argument("--only", choices=["objfs", "orthanc"], help="run one server only")
    args = parser.parse_args(argv)
    if shutil.which("storescu") is None:
        print("dicom_bench: dcmtk is not installed; skipped")
        return
    from objfs.dicom.synth import write_study

    slices = args.slices or (60 if args.quick else 300)
    per_assoc = max(1, slices // 3)
    tries = 10 if args.quick else 40
    servers: list[type[Server]] = []
    if args.only != "orthanc":
        servers.append(ObjfsGateway)
    if args.only != "objfs":
        if ensure_debian_package("orthanc", "Orthanc"):
            servers.append(Orthanc)
        else:
            print("!! dicom_bench: Orthanc could not be installed: no peer measured, ratios left blank !!", flush=True)
    work = Path(tempfile.mkdtemp(prefix="objfs-dicom-bench-", dir=os.environ.get("BENCH_DIR")))
    try:
        studies = {
            "one": write_study(work / "study1", instances=slices, size=512, patient_id="BENCH1"),
            "many": write_study(work / "study4", instances=per_assoc * ASSOCIATIONS, size=512, patient_id="BENCH4"),
        }
        results = {}
        for kind in servers:
            server = kind(work, free_port())
            results[server.name] = run_server(server, studies, work, tries)
        ours, theirs = results.get("objfs", {}), results.get("Orthanc", {})
        rows = []

        def row(what: str, key: str, unit: str, higher_is_better: bool, scale: float = 1.0) -> None:
            a, b = ours.get(key), theirs.get(key)
            shown = [f"{v * scale:.1f}" if v is not None else "-" for v in (a, b)]
            rows.append([what, unit, *shown, ratio(a, b) if higher_is_better else ratio(b, a)])

        row(f"C-STORE {slices} x 512 KiB, 1 assoc", "store1", "instances/s", True)
        row(f"C-STORE {ASSOCIATIONS} assoc x {per_assoc}", "store4", "instances/s", True)
        row(f"C-GET whole study ({slices})", "get", "ms", False, 1000)
        row(f"C-MOVE whole study ({slices})", "move", "ms", False, 1000)
        row("C-FIND STUDY level (all studies)", "find", "ms", False)
        row("association set-up (median)", "assoc", "ms", False)
        print(
            table(
                "DICOM: objfs gateway vs Orthanc 1.10 (SyncStorageArea), CT 512x512x16 bit, TCP_NODELAY=1",
                ["workload", "unit", "objfs", "Orthanc", "objfs speed / Orthanc's"],
                rows,
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
