"""``make run``: initialise the embedded store under ./var if absent, then start the appliance."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from objfs.store.config import CONFIG_NAME
from objfs.stores import Store, init_store


def prepare(store_path: Path) -> dict[str, str] | None:
    """Create the store and a first key if they do not exist; returns a new key (shown once).

    The first key is the administrator's: it holds every right (the lock
    rights too), so the README's examples work with it; bypassing
    GOVERNANCE still needs a request that asks for it.
    """
    if not (store_path / CONFIG_NAME).exists():
        init_store(store_path).close()
        print(f"objfs: created the embedded store at {store_path} (6 directory drives, EC 4+2)")
    with Store.open(store_path) as store:
        if store.keys.all():
            return None
        key = store.keys.create("admin", legal_hold=True, retention=True, bypass_governance=True, now=store.clock.now())
    return {"access_key": key.access_key, "secret_key": key.secret_key}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="objfs-appliance")
    parser.add_argument("store", type=Path)
    parser.add_argument("--mount", type=Path)
    args = parser.parse_args(argv)
    store_path = args.store.resolve()
    key = prepare(store_path)
    if key:
        print("objfs: first S3 key (shown once, also in", store_path / "keys.json", "mode 0600):")
        print(json.dumps(key))
    try:
        from objfs.serve import serve_forever
    except ModuleNotFoundError:
        print("objfs: the fronts are not installed; the store is ready for the CLI", file=sys.stderr)
        return 0
    return serve_forever(store_path, mount=args.mount.resolve() if args.mount else None)


if __name__ == "__main__":
    sys.exit(main())
