"""Administrative commands as an operator runs them: real subprocesses on real store directories."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fragmenthelpers import lose_fragment

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
    from objfs.store.config import STORE_FORMAT

    assert cli("--version").stdout.decode().strip() == f"objfs {objfs.__version__}"
    config = store_path / "objfs.toml"
    current = f"format = {STORE_FORMAT}"
    assert current in config.read_text()

    # A store made before formats were recorded is format 1, opens and serves as it is.
    config.write_text(config.read_text().replace(current + "\n", ""))
    cli("mb", str(store_path), "pacs")
    cli("put", str(store_path), "pacs/a", "-", input=b"old store")
    report = json.loads(cli("upgrade", str(store_path), "--json").stdout)
    assert {k: report[k] for k in ("store", "from", "to", "changed")} == {
        "store": str(store_path.resolve()),
        "from": 1,
        "to": STORE_FORMAT,
        "changed": True,
    }
    text = config.read_text()
    assert text.count(current) == 1 and "# objfs store configuration" in text
    # run twice (or after a crash): no change
    assert f"already format {STORE_FORMAT}".encode() in cli("upgrade", str(store_path)).stdout
    assert config.read_text() == text
    assert cli("get", str(store_path), "pacs/a").stdout == b"old store"

    # A format from the future is refused, naming it.
    config.write_text(text.replace(current, f"format = {STORE_FORMAT + 1}"))
    out = cli("status", str(store_path), check=False)
    assert out.returncode == 1 and f"format {STORE_FORMAT + 1}, written by a newer objfs".encode() in out.stderr


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


def _store_on(tmp_path: Path, cli) -> tuple[Path, list[Path]]:
    """A store whose drives were given with --drive (as on an appliance), with one object."""
    disks = [tmp_path / f"disk{i}" for i in range(6)]
    for disk in disks:
        disk.mkdir()
    store = tmp_path / "st"
    cli("init", str(store), *[arg for disk in disks for arg in ("--drive", str(disk))])
    cli("mb", str(store), "pacs")
    cli("put", str(store), "pacs/a.dcm", "-", input=b"x" * 100_000)
    return store, disks


def test_replace_drive_wants_a_mounted_disk(tmp_path: Path, cli) -> None:
    store, disks = _store_on(tmp_path, cli)
    assert "directory_drives" not in (store / "objfs.toml").read_text()
    shutil.rmtree(disks[2])  # the disk died; its mount point is gone (or empty)
    disks[2].mkdir()
    refused = cli("replace-drive", str(store), "hot-2", check=False)
    assert refused.returncode == 2 and b"no disk is mounted at" in refused.stderr
    assert list(disks[2].iterdir()) == []  # nothing formatted, nothing healed into the root filesystem

    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(disks[2])], check=True)
    try:
        report = json.loads(cli("replace-drive", str(store), "hot-2").stdout.splitlines()[-1])
        assert report["fragments_repaired"] > 0 and report["lost"] == []
    finally:
        subprocess.run(["umount", str(disks[2])], check=True)

    # Told it is meant to be a directory, it formats one.
    report = json.loads(cli("replace-drive", str(store), "hot-2", "--allow-directory").stdout.splitlines()[-1])
    assert report["fragments_repaired"] > 0 and report["lost"] == []


def test_embedded_directory_drives_are_replaced_without_the_flag(store_path: Path, cli) -> None:
    assert "directory_drives = true" in (store_path / "objfs.toml").read_text()
    cli("mb", str(store_path), "pacs")
    cli("put", str(store_path), "pacs/a", "-", input=b"y" * 50_000)
    shutil.rmtree(store_path / "drives" / "d1")
    assert json.loads(cli("replace-drive", str(store_path), "hot-1").stdout.splitlines()[-1])["lost"] == []


def test_reordered_drive_paths_keep_every_drive(tmp_path: Path, cli) -> None:
    store, disks = _store_on(tmp_path, cli)
    config = store / "objfs.toml"
    text = config.read_text()
    a, b, c = (f'"{disks[i]}"' for i in (0, 3, 5))
    config.write_text(text.replace(a, "@A@").replace(b, a).replace(c, b).replace("@A@", c))
    assert config.read_text() != text
    status = json.loads(cli("status", str(store), "--json").stdout)
    assert all(d["state"] == "ok" for d in status["drives"]), status["drives"]
    by_path = {d["path"]: d["id"] for d in status["drives"]}
    assert [by_path[str(disk)] for disk in disks] == [f"hot-{i}" for i in range(6)]
    assert cli("get", str(store), "pacs/a.dcm").stdout == b"x" * 100_000
    scrub = json.loads(cli("scrub", str(store), "--json").stdout)
    assert scrub["fragments_repaired"] == 0 and scrub["lost"] == []

    # Reordered with a drive missing: the others keep their ids, the missing one gets the id left over.
    shutil.rmtree(disks[3])
    status = json.loads(cli("status", str(store), "--json", check=False).stdout)
    states = {d["id"]: (d["state"], d["path"]) for d in status["drives"]}
    assert states["hot-3"] == ("missing", str(disks[3]))
    assert [s for s, _ in states.values()].count("ok") == 5
    assert cli("get", str(store), "pacs/a.dcm").stdout == b"x" * 100_000


def test_status_reports_tiers_and_exits_non_zero_when_degraded(store_path: Path, cli) -> None:
    cli("mb", str(store_path), "pacs")
    cli("put", str(store_path), "pacs/a", "-", input=b"z" * 200_000)
    whole = cli("status", str(store_path), "--json")
    status = json.loads(whole.stdout)
    (tier,) = status["tiers"]
    assert (tier["ec"], tier["drives_ok"], tier["redundancy_left"]) == ("4+2", 6, 2)
    # Six directory drives on one filesystem: the disk is counted once, and usable is raw after parity.
    disk = shutil.disk_usage(store_path)
    assert abs(tier["raw_bytes"] - disk.total) < 2**20
    assert tier["usable_bytes"] == int(tier["raw_bytes"] * 4 / 6)
    assert [d.get("shares_filesystem_with") for d in status["drives"]] == [None] + ["hot-0"] * 5
    assert status["degraded"] == [] and status["lost_objects"] == 0
    human = cli("status", str(store_path)).stdout.decode()
    assert "tier hot: EC 4+2, 6/6 drives ok, redundancy left 2 of 2" in human and "state: ok" in human

    shutil.rmtree(store_path / "drives" / "d4")
    out = cli("status", str(store_path), "--json", check=False)
    assert out.returncode == 1
    status = json.loads(out.stdout)
    assert status["tiers"][0]["redundancy_left"] == 1 and status["degraded"] == ["drive hot-4 is missing"]
    human = cli("status", str(store_path), check=False)
    assert human.returncode == 1 and "DEGRADED: drive hot-4 is missing" in human.stdout.decode()

    # Three drives gone from a 4+2 tier: objects are unreadable, and status says so with exit 2.
    shutil.rmtree(store_path / "drives" / "d0")
    shutil.rmtree(store_path / "drives" / "d1")
    out = cli("status", str(store_path), "--json", check=False)
    assert out.returncode == 2 and json.loads(out.stdout)["tiers"][0]["redundancy_left"] == -1

    # A reader that stops early ends the command quietly (no traceback).
    piped = subprocess.run(
        f"set +o pipefail; {shlex.quote(sys.executable)} -m objfs.cli status {shlex.quote(str(store_path))} | head -1",
        shell=True,
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])),
        executable="/bin/bash",
        timeout=60,
    )
    assert piped.stdout.startswith(b"store ") and b"Traceback" not in piped.stderr


def test_status_shows_smart_backlogs_and_the_last_scrub(store_path: Path, tmp_path: Path, cli) -> None:
    from objfs.store.opstatus import block_device

    cli("mb", str(store_path), "pacs")
    cli("put", str(store_path), "pacs/a", "-", input=b"q" * 100_000)
    status = json.loads(cli("status", str(store_path), "--json").stdout)
    # Directory drives: no disk of their own to ask.
    assert {d["smart"]["health"] for d in status["drives"]} == {"unknown"}
    assert status["drives"][0]["smart"]["detail"] == "directory drive"
    assert status["last_scrub"] is None and status["lifecycle"]["last_pass"] is None
    assert status["replication"] == {"backlog_objects": 0, "backlog_bytes": 0, "lag_seconds": 0.0, "failures": 0}
    human = cli("status", str(store_path)).stdout.decode()
    assert "SMART unknown" in human and "last scrub: never" in human and "lifecycle: no whole pass yet" in human

    # A scrub that runs to its end leaves its summary; one that repaired damage says so.
    cli("scrub", str(store_path), "--json")
    scrubbed = json.loads(cli("status", str(store_path), "--json").stdout)["last_scrub"]
    assert scrubbed["result"] == "ok" and scrubbed["ok"] and scrubbed["objects"] == 1 and scrubbed["age_seconds"] < 60
    with Store.open(store_path) as store, store.index.read() as txn:
        lose_fragment(store, next(r for _, r in txn.scan("objects") if r.get("parts"))["parts"][0], 3)
    cli("scrub", str(store_path), "--json")
    status = json.loads(cli("status", str(store_path), "--json").stdout)
    assert status["last_scrub"]["result"].startswith("repaired ") and status["last_scrub"]["finished"] > scrubbed["finished"]
    human = cli("status", str(store_path)).stdout.decode()
    assert re.search(r"last scrub: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\d+s ago, took \d+s\): repaired \d+ fragments", human)

    # A whole lifecycle pass: when it ended (the lag), none under way.
    cli("lifecycle", "run", str(store_path), "--json")
    life = json.loads(cli("status", str(store_path), "--json").stdout)["lifecycle"]
    assert life["last_pass"] is not None and life["lag_seconds"] < 60 and not life["pass_in_progress"]
    assert "lifecycle: last whole pass" in cli("status", str(store_path)).stdout.decode()

    # Drives given as disks: the block device under each is asked (here a VM disk or none: never a failure).
    store, disks = _store_on(tmp_path, cli)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disks[5])], check=True)
    try:
        out = cli("status", str(store), "--json", check=False)
    finally:
        subprocess.run(["umount", str(disks[5])], check=True)
    drives = json.loads(out.stdout)["drives"]
    assert drives[5]["smart"]["device"] is None and drives[5]["smart"]["health"] == "unknown"  # tmpfs: no disk
    assert drives[0]["smart"]["device"] == block_device(disks[0])
    assert drives[0]["smart"]["health"] in ("passed", "failed", "unknown")
    if shutil.which("smartctl") is None:
        assert "smartmontools" in drives[0]["smart"]["detail"]
