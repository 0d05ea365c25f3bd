"""The systemd units as installed: `systemd-analyze verify` and `security`, the drive drop-ins,
and the notify protocol spoken by a real `objfs serve` (READY, WATCHDOG, RELOADING, STOPPING)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ports import free_port
from test_appliance import serve_command, wait_ready

from objfs.appliance import prepare

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
OBJFS_BIN = Path(sys.executable).parent / "objfs"
# Settings that give a unit its own mount namespace: any of them hides the FUSE mount from the host.
NAMESPACE_SETTINGS = (
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "TemporaryFileSystem",
    "BindPaths",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "RootDirectory",
)


def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is missing (scripts/install-system-deps.sh installs systemd)")
    return found


def settings(unit: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """The units in a unit directory, pointing at this venv's objfs (verify checks the executable exists)."""
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for unit in sorted(UNITS.glob("*.service")) + sorted(UNITS.glob("*.timer")):
        text = unit.read_text().replace("/opt/objfs/.venv/bin/objfs", str(OBJFS_BIN))
        (unit_dir / unit.name).write_text(text)
    # the failure template, as OnFailure= instantiates it
    shutil.copy(unit_dir / "objfs-failure@.service", unit_dir / "objfs-failure@objfs.service.service")
    return unit_dir


def verify(unit_dir: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([analyze(), "verify", "--man=no", *names], cwd=unit_dir, capture_output=True, text=True, timeout=120)


def test_units_verify_cleanly(installed: Path) -> None:
    names = sorted(
        p.name for p in installed.iterdir() if p.suffix in (".service", ".timer") and p.name != "objfs-failure@.service"
    )
    done = verify(installed, names)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    # verify catches a broken unit (so the clean result above means something)
    (installed / "objfs.service").write_text((installed / "objfs.service").read_text().replace("Type=notify", "Type=nonsense"))
    broken = verify(installed, ["objfs.service"])
    assert "nonsense" in broken.stderr


def test_units_are_hardened_and_the_mount_stays_visible(installed: Path) -> None:
    for name in ("objfs.service", "objfs-scrub.service", "objfs-audit-verify.service"):
        done = subprocess.run(
            [analyze(), "security", "--offline=true", str(installed / name)], capture_output=True, text=True, timeout=120
        )
        score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout + done.stderr)
        assert score is not None, done.stdout + done.stderr
        assert float(score.group(1)) <= 5.0, f"{name}: {score.group(0)}"
    main = settings(UNITS / "objfs.service")
    assert main["Type"] == "notify" and int(main["WatchdogSec"]) > 0
    assert main["ExecReload"].endswith("-HUP $MAINPID")
    assert int(main["StartLimitBurst"]) > 0 and int(main["StartLimitIntervalSec"]) > 0
    assert main["DeviceAllow"] == "/dev/fuse rw"
    hiding = [name for name in NAMESPACE_SETTINGS if name in main]
    assert not hiding, f"objfs.service would hide the FUSE mount from the host: {hiding}"
    assert main.get("MountFlags", "shared") == "shared"
    for name in ("objfs.service", "objfs-scrub.service", "objfs-audit-verify.service"):
        assert settings(UNITS / name)["OnFailure"] == "objfs-failure@%n.service"


def test_drive_drop_ins_name_every_drive(installed: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    prepare(store)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "systemd-drives", str(store), "--unit-dir", str(installed)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    from objfs.store.config import load_config

    drives = [str(d) for t in load_config(store).tiers for d in t.drives]
    assert len(drives) >= 3
    main = (installed / "objfs.service.d" / "drives.conf").read_text()
    scrub = (installed / "objfs-scrub.service.d" / "drives.conf").read_text()
    for drive in drives:
        assert f"RequiresMountsFor={drive}\n" in main
        assert f"ReadWritePaths={drive}\n" in scrub
    assert "ReadWritePaths" not in main  # it would give the mounting unit a namespace
    assert verify(installed, ["objfs.service", "objfs-scrub.service"]).returncode == 0


def test_serve_speaks_the_notify_protocol(tmp_path: Path) -> None:
    """READY=1 after the fronts are up, WATCHDOG=1 at half WATCHDOG_USEC, RELOADING/READY on SIGHUP, STOPPING on SIGTERM."""
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    prepare(store)
    address = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(30)
    env = dict(os.environ, PYTHONPATH=str(REPO), NOTIFY_SOCKET=address, WATCHDOG_USEC="400000")
    dicom_port = free_port()
    proc = subprocess.Popen(
        serve_command(store, mnt, free_port(), dicom_port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    messages: list[str] = []

    def receive_until(wanted: str, limit: float = 30) -> None:
        deadline = time.time() + limit
        while time.time() < deadline:
            messages.append(listener.recv(4096).decode())
            if wanted in messages[-1]:
                return
        pytest.fail(f"no {wanted} among {messages}")

    try:
        receive_until("READY=1")
        wait_ready(proc)
        assert os.path.ismount(mnt)
        started = len(messages)
        receive_until("WATCHDOG=1")
        receive_until("WATCHDOG=1", limit=2)  # every 0.2 s
        assert all("WATCHDOG=1" in m for m in messages[started:])
        assert _echo(dicom_port, "TESTSCU")  # no allowlist yet: any calling AE
        with open(store / "objfs.toml", "a") as config:  # live settings, and one bound at start-up
            config.write("\n[lifecycle]\nmax_bytes_per_second = 1000000\n")
            config.write("\n[replication]\ninterval_seconds = 0.5\nmax_bytes_per_second = 2000000\n")
        text = (store / "objfs.toml").read_text().replace("allowed_aets = []", 'allowed_aets = ["MODALITY1"]')
        (store / "objfs.toml").write_text(text.replace("port = 9100", f"port = {free_port()}"))
        proc.send_signal(signal.SIGHUP)
        receive_until("RELOADING=1")
        assert re.search(r"MONOTONIC_USEC=\d+", messages[-1])
        receive_until("READY=1")
        assert os.path.ismount(mnt)  # a reload keeps the mount
        # The DICOM listener kept running and follows the new allowlist.
        assert not _echo(dicom_port, "TESTSCU") and _echo(dicom_port, "MODALITY1")
        assert os.path.ismount(mnt)
        time.sleep(1.5)  # the replication sender takes the new settings at its next pass (it was idle for 1 s)
        proc.send_signal(signal.SIGTERM)
        receive_until("STOPPING=1")
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
        listener.close()
    assert proc.returncode == 0, rest
    assert "reload: applied lifecycle, replication, dicom allowlist" in rest, rest
    assert "admin changed in objfs.toml; takes effect at the next restart" in rest
    assert "replication: settings reloaded" in rest and "max_bytes_per_second=2000000" in rest
    # Each association's summary line, at journald priority 6 (info), names the peer and how it ended.
    assert re.search(r"<6>.*objfs\.dicom INFO association TESTSCU@127\.0\.0\.1:\d+ -> OBJFS: rejected", rest), rest
    assert re.search(r"association MODALITY1@127\.0\.0\.1:\d+ -> OBJFS: released", rest), rest


def _echo(port: int, calling: str) -> bool:
    """A C-ECHO from ``calling`` to the gateway: True when the association is accepted and answered."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="OBJFS")
    if not assoc.is_established:
        return False
    try:
        return int(assoc.send_c_echo().Status) == 0
    finally:
        assoc.release()


def test_an_outside_unmount_exits_non_zero(tmp_path: Path) -> None:
    """`fusermount3 -u` from outside stops every front and exits 1, so Restart=on-failure restarts the appliance."""
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    prepare(store)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        serve_command(store, mnt, free_port(), free_port()), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    try:
        wait_ready(proc)
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True, capture_output=True)
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
    assert proc.returncode == 1, rest
    assert "stopped on its own" in rest
