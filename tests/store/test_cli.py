"""The objfs command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path


def test_init_key_put_get_ls_status_scrub(tmp_path: Path, cli) -> None:
    store = tmp_path / "st"
    out = cli("init", str(store), "--drives", "8", "--ec", "5+3")
    assert b"EC 5+3 on 8 drives" in out.stdout
    assert cli("init", str(store), check=False).returncode == 1

    key = json.loads(cli("key", "create", str(store), "--name", "pacs", "--read-only").stdout)
    assert set(key) == {"access_key", "secret_key"}
    keys_file = store / "keys.json"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert key["access_key"].encode() in cli("key", "list", str(store)).stdout
    assert key["secret_key"].encode() not in cli("key", "list", str(store)).stdout

    src = tmp_path / "slice.dcm"
    src.write_bytes(os.urandom(300_000))
    from objfs.store import Store

    with Store.open(store) as s:
        s.create_bucket("pacs")
    cli("put", str(store), "pacs/ct/1.dcm", str(src))
    cli("put", str(store), "pacs/ct/2.dcm", "-", input=b"from stdin")
    assert cli("get", str(store), "pacs/ct/2.dcm").stdout == b"from stdin"
    cli("get", str(store), "pacs/ct/1.dcm", str(tmp_path / "back.dcm"))
    assert (tmp_path / "back.dcm").read_bytes() == src.read_bytes()

    assert cli("ls", str(store)).stdout == b"pacs/\n"
    assert b"ct/" in cli("ls", str(store), "pacs").stdout
    listing = cli("ls", str(store), "pacs/ct/").stdout.decode()
    assert "ct/1.dcm" in listing and "300000" in listing

    missing = cli("get", str(store), "pacs/ct/nope", check=False)
    assert missing.returncode == 1 and b"does not exist" in missing.stderr

    status = json.loads(cli("status", str(store), "--json").stdout)
    assert status["objects"] == 2 and len(status["drives"]) == 8 and all(d["healthy"] for d in status["drives"])
    human = cli("status", str(store)).stdout.decode()
    assert "GiB free" in human and "objects: 2" in human

    scrub = json.loads(cli("scrub", str(store), "--json").stdout)
    assert scrub["objects"] == 2 and scrub["fragments_repaired"] == 0 and scrub["lost"] == []


def test_bad_config_fails_loudly(store_path: Path, cli) -> None:
    config = store_path / "objfs.toml"
    config.write_text(config.read_text().replace('ec = "4+2"', 'ec = "4+x"'))
    out = cli("status", str(store_path), check=False)
    assert out.returncode == 1 and b"bad EC profile '4+x'" in out.stderr
    config.write_text(config.read_text().replace('ec = "4+x"', 'ec = "4+2"').replace("port = 9000", 'port = "nine"'))
    out = cli("status", str(store_path), check=False)
    assert b"'port' must be a int" in out.stderr


def test_unknown_setting_fails_loudly(store_path: Path, cli) -> None:
    config = store_path / "objfs.toml"
    config.write_text(config.read_text().replace("commit_grace_seconds = 120", "commit_grace_secs = 120"))
    out = cli("status", str(store_path), check=False)
    assert out.returncode == 1 and b"unknown setting(s) ['commit_grace_secs']" in out.stderr
