"""Access keys for the S3 sidecar, kept in ``STORE/keys.json`` (mode 0600), and their rights.

The secret is printed once at creation; the file holds it because SigV4
verification needs the secret itself, which is why the file is readable by
the store's owner only. A key holds the rights it was created with
(:mod:`.access`): read-only or writer, a bucket scope, and the lock rights
``legal_hold``, ``retention`` and ``bypass_governance``, and the account it acts for
(:mod:`.policy`). A key written before a right existed loads with that
right off, one written before accounts in the default account. Fronts reach the keys
through ``Store.keys`` / ``Store.access_key``.

A key can be disabled (and enabled again), deleted, or rotated (a new
secret under the same access key id; the old secret stops working at once).
A disabled key signs nothing: :meth:`KeyRing.get` and :meth:`KeyRing.all`,
what fronts authenticate against, return enabled keys only;
:meth:`KeyRing.every` lists them all. Every change replaces the file
atomically, so a front re-reading it sees the old set or the new one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
import threading
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .access import BYPASS_GOVERNANCE, LEGAL_HOLD, REPLICATION, RETENTION, RIGHTS, WRITE
from .errors import InvalidArgument, StoreError
from .policy import DEFAULT_ACCOUNT

KEYS_FILE = "keys.json"
_ALNUM = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class AccessKey:
    access_key: str
    secret_key: str
    name: str
    read_only: bool = False
    buckets: tuple[str, ...] = ()  # empty: every bucket
    bypass_governance: bool = False
    created: float = 0.0
    legal_hold: bool = False
    retention: bool = False
    disabled: bool = False
    #: The account the key acts for (:mod:`.policy`); keys made before accounts share the default one.
    account: str = DEFAULT_ACCOUNT
    #: May write replicas (another appliance replicating here), :mod:`.replicas`.
    replication: bool = False

    def rights(self) -> list[str]:
        """The rights this key holds beyond reading, by their names in :mod:`.access`."""
        held = {
            WRITE: not self.read_only,
            LEGAL_HOLD: self.legal_hold,
            RETENTION: self.retention,
            BYPASS_GOVERNANCE: self.bypass_governance,
            REPLICATION: self.replication,
        }
        return [right for right in RIGHTS if held[right]]


class NoSuchKey(StoreError):
    """No access key with that id in the store."""


def _new_secret() -> str:
    return secrets.token_urlsafe(30)[:40]


@dataclass
class KeyRing:
    """The keys file of one store; re-read when it changes on disk."""

    path: Path
    _keys: dict[str, AccessKey] = field(default_factory=dict)
    _mtime: float = -1.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of_store(cls, root: Path) -> KeyRing:
        return cls(Path(root) / KEYS_FILE)

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._keys, self._mtime = {}, -1
            return
        if mtime == self._mtime:
            return
        raw = json.loads(self.path.read_text())
        known = {f.name for f in fields(AccessKey)}
        self._keys = {
            k: AccessKey(
                **{name: value for name, value in v.items() if name in known and name != "buckets"},
                buckets=tuple(v.get("buckets", ())),
            )
            for k, v in raw.items()
        }
        self._mtime = mtime

    def get(self, access_key: str) -> AccessKey | None:
        """The enabled key with this id, or None (a disabled key signs nothing)."""
        with self._lock:
            self._load()
            key = self._keys.get(access_key)
            return None if key is None or key.disabled else key

    def all(self) -> list[AccessKey]:
        """Every enabled key."""
        with self._lock:
            self._load()
            return [key for key in self._keys.values() if not key.disabled]

    def every(self) -> list[AccessKey]:
        """Every key, disabled ones included (for listing)."""
        with self._lock:
            self._load()
            return list(self._keys.values())

    def delete(self, access_key: str) -> AccessKey:
        """Remove a key for good; returns what it was."""
        return self._change(access_key, lambda key: None)

    def set_disabled(self, access_key: str, disabled: bool) -> AccessKey:
        """Disable (or enable again) a key without forgetting its rights."""
        return self._change(access_key, lambda key: replace(key, disabled=disabled))

    def rotate(self, access_key: str) -> AccessKey:
        """Give a key a new secret; the old one stops working. Returns the key with its new secret."""
        return self._change(access_key, lambda key: replace(key, secret_key=_new_secret()))

    def _change(self, access_key: str, change: Any) -> AccessKey:
        with self._lock:
            self._mtime = -1
            self._load()
            keys = dict(self._keys)
            if access_key not in keys:
                raise NoSuchKey(f"no access key {access_key!r} in {self.path}")
            old = keys.pop(access_key)
            new = change(old)
            if new is not None:
                keys[access_key] = new
            self._write(keys)
        return new if new is not None else old

    def _write(self, keys: dict[str, AccessKey]) -> None:
        """Replace the file atomically, 0600 from its first byte; the caller holds ``_lock``."""
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({k: asdict(v) for k, v in keys.items()}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.rename(tmp, self.path)
        self._mtime = -1

    def create(
        self,
        name: str,
        *,
        read_only: bool = False,
        buckets: tuple[str, ...] = (),
        bypass_governance: bool = False,
        legal_hold: bool = False,
        retention: bool = False,
        account: str = DEFAULT_ACCOUNT,
        now: float = 0.0,
        replication: bool = False,
    ) -> AccessKey:
        """Create a key (of ``account``); the file is replaced atomically and stays 0600."""
        if not name or len(name) > 64:
            raise InvalidArgument("a key name is 1 to 64 characters")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", account):
            raise InvalidArgument("an account name is 1 to 64 letters, digits, '.', '_' or '-'")
        if read_only and (legal_hold or retention or bypass_governance or replication):
            raise InvalidArgument("a read-only key cannot hold a lock right")
        key = AccessKey(
            access_key="OBJFS" + "".join(secrets.choice(_ALNUM) for _ in range(15)),
            secret_key=_new_secret(),
            name=name,
            read_only=read_only,
            buckets=tuple(buckets),
            bypass_governance=bypass_governance,
            legal_hold=legal_hold,
            retention=retention,
            account=account,
            created=now,
            replication=replication,
        )
        with self._lock:
            self._mtime = -1
            self._load()
            keys = dict(self._keys)
            keys[key.access_key] = key
            self._write(keys)
        return key
