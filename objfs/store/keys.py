"""Access keys for the S3 sidecar, kept in ``STORE/keys.json`` (mode 0600).

The secret is printed once at creation; the file holds it because SigV4
verification needs the secret itself, which is why the file is readable by
the store's owner only.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import InvalidArgument

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

    def may_access(self, bucket: str | None) -> bool:
        return not self.buckets or bucket is None or bucket in self.buckets


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
        self._keys = {k: AccessKey(**dict(v, buckets=tuple(v.get("buckets", ())))) for k, v in raw.items()}
        self._mtime = mtime

    def get(self, access_key: str) -> AccessKey | None:
        with self._lock:
            self._load()
            return self._keys.get(access_key)

    def all(self) -> list[AccessKey]:
        with self._lock:
            self._load()
            return list(self._keys.values())

    def create(
        self,
        name: str,
        *,
        read_only: bool = False,
        buckets: tuple[str, ...] = (),
        bypass_governance: bool = False,
        now: float = 0.0,
    ) -> AccessKey:
        """Create a key; the file is replaced atomically and stays 0600."""
        if not name or len(name) > 64:
            raise InvalidArgument("a key name is 1 to 64 characters")
        key = AccessKey(
            access_key="OBJFS" + "".join(secrets.choice(_ALNUM) for _ in range(15)),
            secret_key=secrets.token_urlsafe(30)[:40],
            name=name,
            read_only=read_only,
            buckets=tuple(buckets),
            bypass_governance=bypass_governance,
            created=now,
        )
        with self._lock:
            self._mtime = -1
            self._load()
            keys = dict(self._keys)
            keys[key.access_key] = key
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({k: asdict(v) for k, v in keys.items()}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.rename(tmp, self.path)
            self._mtime = -1
        return key
