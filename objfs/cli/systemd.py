"""``objfs systemd-drives``: the systemd drop-ins that make every objfs unit wait for every drive.

``objfs.toml`` names the drives; systemd must not start the appliance (or a
scrub) before each of them is mounted, or the store starts degraded and heals
into whatever directory sits under the missing mount. The command writes, for
each unit, ``<unit>.d/drives.conf`` with one ``RequiresMountsFor=`` per drive
(and ``ReadWritePaths=`` for the sandboxed maintenance units, whose file
system is otherwise read-only). ``make install-systemd`` runs it; run it again
after ``replace-drive`` or a change of drive paths, then ``systemctl daemon-reload``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: The units that touch the drives, and whether they are sandboxed (read-only file system).
UNITS = {"objfs.service": False, "objfs-scrub.service": True, "objfs-audit-verify.service": True}
HEADER = "# Written by `objfs systemd-drives` from objfs.toml; run it again after changing the drives.\n"


def register(subparsers: Any) -> None:
    """Add ``systemd-drives`` to the ``objfs`` parser."""
    p = subparsers.add_parser("systemd-drives", help="write RequiresMountsFor= drop-ins for every drive of the store")
    p.add_argument("store")
    p.add_argument("--unit-dir", default="/etc/systemd/system", help="where the units are (default /etc/systemd/system)")
    p.add_argument("--print", action="store_true", help="print the drop-in instead of writing it")
    p.set_defaults(func=cmd_systemd_drives)


def drop_in(store_root: Path, drives: list[Path], sandboxed: bool) -> str:
    """The ``[Unit]``/``[Service]`` drop-in text naming ``drives`` (and the store) for one unit."""
    paths = [str(store_root)] + [str(d) for d in drives]
    text = HEADER + "[Unit]\n" + "".join(f"RequiresMountsFor={p}\n" for p in paths)
    if sandboxed:
        text += "\n[Service]\n" + "".join(f"ReadWritePaths={p}\n" for p in paths)
    return text


def cmd_systemd_drives(args: argparse.Namespace) -> int:
    from objfs.store.config import load_config

    root = Path(args.store).resolve()
    config = load_config(root)
    drives = [drive for tier in config.tiers for drive in tier.drives]
    for unit, sandboxed in UNITS.items():
        text = drop_in(root, drives, sandboxed)
        if args.print:
            print(f"# {unit}.d/drives.conf\n{text}")
            continue
        directory = Path(args.unit_dir) / f"{unit}.d"
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "drives.conf"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(target)
        print(f"objfs: wrote {target}")
    return 0
