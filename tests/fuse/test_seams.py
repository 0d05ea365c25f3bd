"""The mount translates; the engine owns policy: no WORM rule, audit line or spool path is made in objfs/fuse."""

from __future__ import annotations

from pathlib import Path

import objfs.fuse

FUSE = Path(objfs.fuse.__file__).parent


def test_the_mount_leaves_policy_and_spool_paths_to_the_engine() -> None:
    for module in sorted(FUSE.glob("*.py")):
        text = module.read_text()
        for forbidden in ("record_audit", "lock_state", "spool_dir", "import lmdb", "lock_active", "in_commit_grace"):
            assert forbidden not in text, f"{module.name} uses {forbidden}"
        assert len(text.splitlines()) < 400, f"{module.name} does more than one job"
