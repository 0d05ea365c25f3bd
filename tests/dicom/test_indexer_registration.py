"""The DICOM index is registered by the processes that open a store, not by the engine.

The engine (``objfs.store``) imports no front; the ``objfs`` CLI and the S3
sidecar register the DICOM indexer when they open a store (through
:mod:`objfs.stores`), so a DICOM file written through either is found by
C-FIND at the gateway, which runs as a third process on the same store.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dicom_scu as scu
import pytest
from dicomtest import REPO, configure, start_gateway, stop_gateway
from pydicom import dcmread

from objfs.dicom.synth import write_study
from objfs.store import Store as EngineStore
from objfs.stores import Store, init_store

sys.path.insert(0, str(REPO / "tests" / "s3"))
from s3helpers import create_key, make_client, start_server  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _find_sop(port: int, sop: str) -> list[str]:
    found, final = scu.find(
        port, {"QueryRetrieveLevel": "IMAGE", "SOPInstanceUID": sop, "StudyInstanceUID": "", "SeriesInstanceUID": ""}
    )
    assert final == 0
    return [str(f.SOPInstanceUID) for f in found]


def test_dicom_written_through_the_cli_and_the_s3_sidecar_is_found_by_c_find(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    init_store(store_path).close()
    configure(store_path, allowed=["TESTSCU"])
    _, files = write_study(tmp_path / "study", instances=2)
    via_cli, via_s3 = files
    gw = start_gateway(store_path)
    server = start_server(store_path)
    try:
        subprocess.run(
            [sys.executable, "-m", "objfs.cli", "put", str(store_path), "pacs/legacy/a.dcm", str(via_cli)],
            check=True,
            capture_output=True,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            timeout=60,
        )
        s3 = make_client(server.url, create_key(store_path, "--name", "writer"))
        s3.put_object(Bucket="pacs", Key="legacy/b.dcm", Body=via_s3.read_bytes(), ContentType="application/dicom")
        for path in (via_cli, via_s3):
            sop = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            assert _find_sop(gw.port, sop) == [sop]
    finally:
        server.stop()
        err = stop_gateway(gw)
    assert "Traceback" not in err, err


def test_a_plain_engine_store_has_no_indexer_and_objfs_stores_registers_dicom_once(store_path: Path) -> None:
    with EngineStore.open(store_path) as engine:
        assert engine.indexers == []
    with Store.open(store_path) as store:
        assert [type(i).__name__ for i in store.indexers] == ["ReplicationQueue", "DicomIndexer", "PriorsIndexer"]
        from objfs.dicom.index import register

        register(store)  # idempotent
        assert len(store.indexers) == 3
        assert {"dicom", "dicomkeys"} <= set(store.index.dbs)


def test_the_engine_imports_nothing_from_objfs_dicom(tmp_path: Path) -> None:
    # statically: no import of objfs.dicom anywhere in the engine package, lazy ones included
    for source in sorted((REPO / "objfs" / "store").glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "objfs.dicom" or n.startswith("objfs.dicom.") for n in names), f"{source.name}: {names}"
    # dynamically: creating a store and writing a DICOM file through the engine loads no DICOM module
    _, (dicom_file,) = write_study(tmp_path / "study", instances=1)
    code = (
        "import io, sys\n"
        "from objfs.store import init_store\n"
        "s = init_store(sys.argv[1])\n"
        "s.create_bucket('pacs')\n"
        "s.put_object('pacs', 'x.dcm', io.BytesIO(open(sys.argv[2], 'rb').read()))\n"
        "s.close()\n"
        "print(sorted(m for m in sys.modules if m.startswith('objfs.dicom')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "store"), str(dicom_file)],
        check=True,
        capture_output=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert out.stdout.decode().strip() == "[]"
