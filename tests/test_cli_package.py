"""The ``objfs`` command as a package: every command group answers, get refuses devices, pipes close quietly.

Every command runs as a real ``python -m objfs.cli`` subprocess on a real store.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

COMMANDS = [
    "init",
    "status",
    "scrub",
    "gc",
    "rebuild-index",
    "replace-drive",
    "key",
    "key create",
    "key list",
    "key delete",
    "key disable",
    "key enable",
    "key rotate",
    "kms",
    "mb",
    "put",
    "get",
    "ls",
    "rm",
    "retention",
    "audit",
    "mount",
    "dicom",
    "migrate",
    "dicomweb",
    "serve",
    "upgrade",
    "heal",
    "backup-index",
    "systemd-drives",
    "tier",
    "tier add",
    "tier list",
    "lifecycle",
    "lifecycle set",
    "lifecycle show",
    "lifecycle run",
    "remote",
    "remote add",
    "remote list",
    "remote remove",
    "replication",
    "replication set",
    "replication show",
    "replication remove",
    "replication status",
    "replication resync",
    "replication verify",
]


def objfs_shell(command: str) -> subprocess.CompletedProcess:
    """Run a bash pipeline in which ``objfs`` is this tree's CLI; pipefail is off, as in an operator's shell."""
    objfs = f"{shlex.quote(sys.executable)} -m objfs.cli"
    script = f'set +o pipefail; objfs() {{ {objfs} "$@"; }}; {command}'
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env=env)


def test_top_level_help_lists_every_command(cli) -> None:
    out = cli("--help").stdout.decode()
    listed = out.split("{", 1)[1].split("}", 1)[0].split(",")
    assert sorted(listed) == sorted({c.split()[0] for c in COMMANDS})


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_group_help(cli, command: str) -> None:
    out = cli(*command.split(), "--help")
    assert out.returncode == 0 and out.stdout.decode().startswith(f"usage: objfs {command}")
    assert out.stderr == b""


@pytest.fixture
def with_object(store_path: Path, cli, tmp_path: Path) -> tuple[Path, bytes]:
    """The store with bucket ``pacs`` holding ``pacs/a`` (2 MiB: more than a pipe buffer)."""
    body = os.urandom(2 << 20)
    (tmp_path / "body").write_bytes(body)
    cli("mb", str(store_path), "pacs")
    cli("put", str(store_path), "pacs/a", str(tmp_path / "body"))
    return store_path, body


@pytest.fixture
def dev_null_guard():
    """Put /dev/null back if a regression replaced it: the whole machine depends on it."""
    yield
    if not stat.S_ISCHR(os.lstat(os.devnull).st_mode):
        os.unlink(os.devnull)
        os.mknod(os.devnull, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(os.devnull, 0o666)


def test_get_refuses_a_device_and_leaves_it_a_device(with_object, cli, tmp_path: Path, dev_null_guard) -> None:
    store, _ = with_object
    # A private null device first, so a regression is caught before /dev/null is at stake.
    private = tmp_path / "null"
    os.mknod(private, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    link = tmp_path / "null-link"
    link.symlink_to(os.devnull)
    for target in (str(private), os.devnull, str(link)):
        out = cli("get", str(store), "pacs/a", target, check=False)
        assert out.returncode == 2
        assert b"is not a regular file" in out.stderr and b"Traceback" not in out.stderr
        assert stat.S_ISCHR(os.stat(target).st_mode)
        assert not os.path.lexists(target + ".objfs-part")
    assert link.is_symlink()


def test_get_refuses_a_directory(with_object, cli, tmp_path: Path) -> None:
    store, _ = with_object
    target = tmp_path / "out"
    target.mkdir()
    out = cli("get", str(store), "pacs/a", str(target), check=False)
    assert out.returncode == 2 and b"is a directory" in out.stderr
    assert target.is_dir() and list(target.iterdir()) == []


def test_get_replaces_a_regular_file_and_writes_stdout(with_object, cli, tmp_path: Path) -> None:
    store, body = with_object
    target = tmp_path / "old.dcm"
    target.write_bytes(b"old contents")
    cli("get", str(store), "pacs/a", str(target))
    assert target.read_bytes() == body and not (tmp_path / "old.dcm.objfs-part").exists()
    assert cli("get", str(store), "pacs/a", "-").stdout == body


def test_status_into_head_has_no_traceback(store_path: Path) -> None:
    out = objfs_shell(f"objfs status {shlex.quote(str(store_path))} | head -1")
    assert out.returncode == 0 and out.stdout == f"store {store_path}\n"
    assert out.stderr == ""


def test_a_reader_that_closes_early_ends_the_command_quietly(with_object) -> None:
    store, body = with_object
    q = shlex.quote(str(store))
    # `true` exits before objfs writes, and 2 MiB overfill the pipe after head leaves: EPIPE is certain.
    out = objfs_shell(
        f"objfs status {q} | true; echo status=${{PIPESTATUS[0]}}; objfs get {q} pacs/a | head -c 10 | wc -c; echo get=${{PIPESTATUS[0]}}"
    )
    assert out.stdout.split() == ["status=141", "10", "get=141"]
    assert out.stderr == ""


def test_keys_belong_to_the_account_they_are_created_for(tmp_path: Path, cli) -> None:
    store = tmp_path / "store"
    cli("init", str(store))
    cli("key", "create", str(store), "--name", "viewer", "--account", "radiology")
    cli("key", "create", str(store), "--name", "other")
    listed = {k["name"]: k["account"] for k in json.loads(cli("key", "list", str(store), "--json").stdout)}
    assert listed["viewer"] == "radiology" and listed["other"] != "radiology"
