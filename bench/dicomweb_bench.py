"""DICOMweb benchmark: study metadata (WADO-RS) for 300 and 900 instances, and a whole-study
WADO-RS retrieve against C-GET (dcmtk getscu) of the same study, in the same run.

Both fronts run as their own processes (``objfs dicom``, ``objfs dicomweb``)
over one store; the studies are C-STOREd through the gateway first. Metadata
is timed cold (first request after start: every header read once) and warm
(answered from the per-version cache).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.common import table

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TCP_NODELAY="1", PYTHONPATH=str(REPO))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], ready: callable) -> subprocess.Popen:  # type: ignore[valid-type]
    proc = subprocess.Popen([sys.executable, "-m", *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        if ready():
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{args} did not come up")


def _echo(port: int) -> bool:
    return subprocess.run(["echoscu", "-aec", "OBJFS", "127.0.0.1", str(port)], env=ENV, capture_output=True).returncode == 0


def _http_up(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
        return True
    except requests.ConnectionError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dicomweb_bench")
    parser.add_argument("--quick", action="store_true", help="60 and 180 instances instead of 300 and 900")
    args = parser.parse_args(argv)
    if shutil.which("storescu") is None or shutil.which("getscu") is None:
        print("dicomweb_bench: dcmtk (storescu, getscu) not installed; skipped")
        return
    from objfs.dicom.synth import write_study
    from objfs.store import init_store
    from objfs.store.keys import KeyRing

    sizes = (60, 180) if args.quick else (300, 900)
    with tempfile.TemporaryDirectory(prefix="objfs-dicomweb-bench-") as tmp:
        root = Path(tmp)
        store = root / "store"
        init_store(store).close()
        key = KeyRing.of_store(store).create("bench")
        auth = (key.access_key, key.secret_key)
        dicom_port, web_port = _port(), _port()
        gateway = _start(["objfs.cli", "dicom", str(store), "--port", str(dicom_port)], lambda: _echo(dicom_port))
        url = f"http://127.0.0.1:{web_port}/dicom-web"
        web = _start(["objfs.dicomweb", str(store), "--port", str(web_port)], lambda: _http_up(url + "/studies"))
        rows = []
        try:
            for n in sizes:
                uid, paths = write_study(root / f"study{n}", instances=n, series=3, patient_id=f"BENCH{n}", size=256)
                subprocess.run(["storescu", "-aec", "OBJFS", "127.0.0.1", str(dicom_port), *map(str, paths)], env=ENV, check=True)
                timings = []
                for _ in range(2):
                    start = time.perf_counter()
                    got = requests.get(f"{url}/studies/{uid}/metadata", auth=auth, timeout=120)
                    timings.append(time.perf_counter() - start)
                    assert got.status_code == 200 and len(got.json()) == n, got.status_code
                start = time.perf_counter()
                with requests.get(
                    f"{url}/studies/{uid}",
                    auth=auth,
                    headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
                    stream=True,
                    timeout=300,
                ) as got:
                    wado_bytes = sum(len(c) for c in got.iter_content(1 << 20))
                wado = time.perf_counter() - start
                out = root / f"get{n}"
                out.mkdir()
                start = time.perf_counter()
                subprocess.run(
                    ["getscu", "-aec", "OBJFS", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}",
                     "-od", str(out), "127.0.0.1", str(dicom_port)],
                    env=ENV, check=True, capture_output=True,
                )  # fmt: skip
                cget = time.perf_counter() - start
                assert len(list(out.iterdir())) == n
                rows.append(
                    [
                        n,
                        f"{timings[0]:.3f}",
                        f"{timings[1]:.3f}",
                        f"{wado:.2f} ({wado_bytes / wado / 1e6:.0f} MB/s)",
                        f"{cget:.2f}",
                    ]
                )
        finally:
            for proc in (web, gateway):
                proc.terminate()
                proc.wait(timeout=30)
        print(
            table(
                "DICOMweb: study metadata and whole-study retrieve (256x256x16-bit CT, 3 series)",
                ["instances", "metadata cold s", "metadata warm s", "WADO-RS study s", "C-GET (getscu) s"],
                rows,
            )
        )


if __name__ == "__main__":
    main()
