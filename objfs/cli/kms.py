"""``objfs kms init|create|list|rotate STORE [NAME]``: the store's key file and local KMS keys (SSE-KMS).

Keys live in the store's key file (``[encryption] key_file``), never on the
drives. ``init`` creates the key file (with a fresh master key) of a store
made before encryption existed, once ``[encryption] key_file`` names it.
Rotation adds a version: new objects are wrapped by it, and every
older version stays in the file so the objects it wrapped still read.
Each change is recorded in the audit trail as ``cli:<user>``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from objfs.store import InvalidArgument, StoreError
from objfs.store.crypto import new_key_file
from objfs.stores import Store

from .common import cli_principal


def cmd_kms(args: argparse.Namespace) -> int:
    with Store.open(args.store) as store:
        keys = store.encryption
        principal = cli_principal()
        try:
            if args.action == "init":
                if keys.path is None:
                    raise InvalidArgument('add [encryption] key_file = "keys/objfs-keys.json" to objfs.toml first')
                if keys.path.exists():
                    raise InvalidArgument(f"{keys.path} exists already")
                new_key_file(keys.path)
                store.record_audit("kms-init", principal, "ok", True, detail=str(keys.path))
                out: Any = {"key_file": str(keys.path)}
            elif args.action == "list":
                out = keys.kms_list()
            else:
                if not args.name:
                    raise InvalidArgument(f"objfs kms {args.action} needs a key NAME")
                out = keys.kms_create(args.name) if args.action == "create" else keys.kms_rotate(args.name)
                store.record_audit(f"kms-{args.action}", principal, "ok", True, detail=f"{out['name']} v{out['version']}")
        except StoreError as exc:
            raise SystemExit(f"objfs: {exc}") from None
    print(json.dumps(out, indent=1))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("kms", help="the key file (init) and local KMS keys (create, list, rotate) for encryption at rest")
    p.add_argument("action", choices=["init", "create", "list", "rotate"])
    p.add_argument("store")
    p.add_argument("name", nargs="?", help="the key name (its id in x-amz-server-side-encryption-aws-kms-key-id)")
    p.set_defaults(func=cmd_kms)
