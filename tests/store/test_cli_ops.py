"""Administrative commands as an operator runs them: real subprocesses on real store directories."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from objfs.store import Store


def test_mb_sets_a_default_retention(store_path: Path, tmp_path: Path, cli) -> None:
    store = str(store_path)
    cli("mb", store, "scans", "--object-lock", "--retention-days", "30", "--retention-mode", "COMPLIANCE")
    cli("mb", store, "reports", "--object-lock", "--retention-years", "10", "--retention-mode", "GOVERNANCE")
    with Store.open(store_path) as s:
        assert s.head_bucket("scans")["lock_default"]["mode"] == "COMPLIANCE"
        assert s.head_bucket("scans")["lock_default"]["days"] == 30
        reports = s.head_bucket("reports")["lock_default"]
        assert (reports["mode"], reports["years"], reports["days"]) == ("GOVERNANCE", 10, None)
    cli("put", store, "scans/1.dcm", "-", input=b"image")
    shown = json.loads(cli("retention", "show", store, "scans/1.dcm").stdout)
    assert shown["retention"]["mode"] == "COMPLIANCE"
    until = time.mktime(time.strptime(shown["retention"]["until"][:10], "%Y-%m-%d"))
    assert 28 * 86400 < until - time.time() < 31 * 86400
    refused = cli("rm", store, "scans/1.dcm", "--version", shown["version_id"], check=False)
    assert refused.returncode == 1 and b"Traceback" not in refused.stderr

    # Refused before the bucket exists: no bucket is left behind without its default.
    for bad in (
        ["mb", store, "plain", "--retention-days", "5", "--retention-mode", "GOVERNANCE"],
        ["mb", store, "nomode", "--object-lock", "--retention-days", "5"],
        ["mb", store, "zero", "--object-lock", "--retention-days", "0", "--retention-mode", "GOVERNANCE"],
    ):
        out = cli(*bad, check=False)
        assert out.returncode != 0 and b"Traceback" not in out.stderr, out.stderr
    assert cli("ls", store).stdout.decode().split() == ["reports/", "scans/"]


def test_version_and_store_format(store_path: Path, cli) -> None:
    import objfs

    assert cli("--version").stdout.decode().strip() == f"objfs {objfs.__version__}"
    config = store_path / "objfs.toml"
    assert "format = 2" in config.read_text()

    # A store made before formats were recorded is format 1, opens and serves as it is.
    config.write_text(config.read_text().replace("format = 2\n", ""))
    cli("mb", str(store_path), "pacs")
    cli("put", str(store_path), "pacs/a", "-", input=b"old store")
    assert json.loads(cli("upgrade", str(store_path), "--json").stdout) == {
        "store": str(store_path.resolve()),
        "from": 1,
        "to": 2,
        "changed": True,
    }
    text = config.read_text()
    assert text.count("format = 2") == 1 and "# objfs store configuration" in text
    assert b"already format 2" in cli("upgrade", str(store_path)).stdout  # run twice (or after a crash): no change
    assert config.read_text() == text
    assert cli("get", str(store_path), "pacs/a").stdout == b"old store"

    # A format from the future is refused, naming it.
    config.write_text(text.replace("format = 2", "format = 3"))
    out = cli("status", str(store_path), check=False)
    assert out.returncode == 1 and b"format 3, written by a newer objfs" in out.stderr


def test_upgrade_refuses_while_the_store_is_served(store_path: Path, tmp_path: Path, cli) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cli("mount", str(store_path), str(mnt))
    try:
        out = cli("upgrade", str(store_path), check=False)
        assert out.returncode == 2 and b"needs the store alone" in out.stderr
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
    deadline = time.time() + 10
    while time.time() < deadline:  # the mount process ends (and drops its lock) just after the unmount
        out = cli("upgrade", str(store_path), check=False)
        if out.returncode == 0:
            break
        time.sleep(0.2)
    assert out.returncode == 0, out.stderr
