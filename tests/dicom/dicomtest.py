"""Helpers for the DICOM tests: gateway subprocesses, C-ECHO, Part-10 byte handling."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import Verification

REPO = Path(__file__).resolve().parents[2]
# Also imported by SCU scripts run as their own processes, where tests/ is not on the path.
sys.path.insert(0, str(REPO / "tests"))
from ports import free_port  # noqa: E402

DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")  # Nagle off in dcmtk tools (Debian default is on)


def echo(port: int, aet: str = "OBJFS", calling: str = "TESTSCU") -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0
    finally:
        assoc.release()


def dataset_bytes(data: bytes) -> bytes:
    """The dataset part of a Part-10 file (everything after its File Meta group)."""
    assert data[128:132] == b"DICM" and data[132:138] == b"\x02\x00\x00\x00UL"
    (group_length,) = struct.unpack("<I", data[140:144])
    return data[144 + group_length :]


def dataset_offset(fp: BinaryIO) -> int:
    """Offset of the dataset in an open Part-10 file (read from its File Meta group length)."""
    fp.seek(128)
    head = fp.read(16)
    assert head[:4] == b"DICM" and head[4:10] == b"\x02\x00\x00\x00UL"
    (group_length,) = struct.unpack("<I", head[12:16])
    return 144 + group_length


def sop_uid(data: bytes | Path) -> str:
    if isinstance(data, Path):
        data = data.read_bytes()
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True).SOPInstanceUID)


@dataclass
class Gateway:
    store: Path
    port: int
    proc: subprocess.Popen
    aet: str = "OBJFS"
    bucket: str = "pacs"


def configure(
    store: Path, *, allowed: list[str] | None = None, duplicates: str = "keep", destinations: dict[str, int] | None = None
) -> None:
    text = (store / "objfs.toml").read_text()
    text = text.replace("allowed_aets = []", "allowed_aets = [" + ", ".join(f'"{a}"' for a in allowed or []) + "]")
    text = text.replace('duplicates = "keep"', f'duplicates = "{duplicates}"')
    for aet, port in (destinations or {}).items():
        text += f'"{aet}" = "127.0.0.1:{port}"\n'
    (store / "objfs.toml").write_text(text)


def start_gateway(store: Path, port: int | None = None) -> Gateway:
    port = port or free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "objfs.cli", "dicom", str(store), "--port", str(port), "--host", "127.0.0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {proc.stderr.read().decode()}")
        try:
            if echo(port):
                return Gateway(store, port, proc)
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gateway did not answer C-ECHO")


def stop_gateway(gw: Gateway) -> str:
    gw.proc.terminate()
    try:
        _, err = gw.proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        gw.proc.kill()
        _, err = gw.proc.communicate()
    return err.decode(errors="replace")
