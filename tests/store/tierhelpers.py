"""Helpers of the tiering tests: a store with a hot and a warm tier of directory drives, lifecycle days of a second."""

from __future__ import annotations

import subprocess
from pathlib import Path

from objfs.store import init_store
from objfs.store.tiers import add_tier


def tiered_store(root: Path, *, day_seconds: int = 1, default_rules: bool = False) -> Path:
    """A closed store at ``root``: hot 4+2 and warm 3+2 (other directories), ``[lifecycle] day_seconds``.

    Without ``default_rules`` the store-wide seed policy is off, so only bucket rules act.
    """
    init_store(root).close()
    add_tier(root, "warm", [str(root.parent / f"warm{i}") for i in range(5)], "3+2")
    transitions = "" if default_rules else "default_transitions = []\n"
    with open(root / "objfs.toml", "a") as f:
        f.write(f"\n[lifecycle]\nday_seconds = {day_seconds}\ninterval_seconds = 1\n{transitions}")
    return root


def unlock_tree(*paths: Path) -> None:
    for path in paths:
        subprocess.run(["chattr", "-R", "-f", "-i", str(path)], check=False, capture_output=True)
