"""The audit log sealed into segments (one chain across them) and copied to syslog over real sockets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from objfs.store import Principal
from objfs.stores import init_store, open_store

REPO = Path(__file__).resolve().parents[2]


def configure(root: Path, **audit: object) -> None:
    """Replace the [audit] settings of a store's objfs.toml."""
    text = (root / "objfs.toml").read_text()
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in audit.items())
    text = text.replace("segment_bytes = 67108864\n", lines)
    (root / "objfs.toml").write_text(text)


def verify(root: Path) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "audit", "verify", str(root)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
    )
    return done.returncode, done.stdout


def test_segments_chain_and_any_removal_is_caught(tmp_path: Path) -> None:
    root = tmp_path / "store"
    init_store(root).close()
    configure(root, segment_bytes=4096)
    store = open_store(root)
    who = Principal("s3:tester", source_ip="192.0.2.7")
    try:
        store.create_bucket("seg", principal=who)
        for i in range(60):
            store.put_object("seg", f"k{i}", b"x", principal=who)
    finally:
        store.close()
    audit = root / "audit"
    sealed = sorted(audit.glob("sealed-*.log"))
    assert len(sealed) >= 3
    assert all(p.stat().st_size >= 4096 and p.stat().st_mode & 0o777 == 0o400 for p in sealed)
    first_live = json.loads((audit / "audit.log").read_text().splitlines()[0])
    assert first_live["action"] == "seal" and first_live["detail"] == sealed[-1].name
    code, out = verify(root)
    summary = json.loads(out.splitlines()[-1])
    assert code == 0 and summary["lines"] == summary["head_seq"] == 61 + len(sealed), out
    # every line carries the client address
    assert all(e.get("ip") == "192.0.2.7" for e in store.audit.entries() if e["who"] == "s3:tester")

    for victim in (sealed[0], sealed[1], sealed[-1]):  # the oldest, a middle one, the newest
        kept = victim.read_bytes()
        victim.unlink()
        code, out = verify(root)
        assert code == 1 and "TAMPERED" in out, victim.name
        victim.write_bytes(kept)
        os.chmod(victim, 0o400)
        assert verify(root)[0] == 0
    # an edited line inside a sealed segment
    original = sealed[1].read_text()
    sealed[1].write_text(original.replace('"k', '"K', 1))
    code, out = verify(root)
    assert code == 1 and f"line 2 of {sealed[1].name}: its content does not match its hash" in out
    sealed[1].write_text(original)

    # objfs audit rotate seals now; appends continue the chain in the new log
    done = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "audit", "rotate", str(root)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and json.loads(done.stdout)["sealed"]
    store = open_store(root)
    try:
        store.put_object("seg", "after", b"y", principal=who)
    finally:
        store.close()
    assert len(sorted(audit.glob("sealed-*.log"))) == len(sealed) + 1
    assert verify(root)[0] == 0


def test_every_line_goes_to_syslog_over_udp_and_a_unix_socket(tmp_path: Path) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(10)
    unix_path = str(tmp_path / "log.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    unix.bind(unix_path)
    unix.settimeout(10)
    try:
        for receiver, target in ((udp, f"udp://127.0.0.1:{udp.getsockname()[1]}"), (unix, unix_path)):
            root = tmp_path / f"store-{receiver.family.name}"
            init_store(root).close()
            configure(root, syslog=target)
            store = open_store(root)
            try:
                who = Principal("s3:tester", source_ip="198.51.100.4", request_id="REQ123")
                store.create_bucket("sys", principal=who)
                store.put_object("sys", "a.dcm", b"body", principal=who)
                with store.open_object("sys", "a.dcm", principal=who) as reader:
                    reader.readall()
            finally:
                store.close()
            on_disk = [json.loads(line) for line in (root / "audit" / "audit.log").read_text().splitlines()]
            received = [receiver.recv(65536).decode() for _ in on_disk]
            for line, datagram in zip(on_disk, received):
                assert datagram.startswith("<85>1 ")  # authpriv.notice, RFC 5424
                assert " objfs-audit " in datagram
                assert json.loads(datagram.split(" - - ", 1)[1]) == line
            assert [e["action"] for e in on_disk] == ["create-bucket", "write", "read"]
            assert all(e["request"] == "REQ123" and e["ip"] == "198.51.100.4" for e in on_disk)
    finally:
        udp.close()
        unix.close()
