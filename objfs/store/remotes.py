"""Remote S3 endpoints this store talks to: replication targets and remote tiers.

A remote is a name for an S3 endpoint (another objfs appliance, or an S3
system the hospital already runs) with the key objfs uses there. Each is kept
in ``STORE/remotes/NAME.json``, readable by root only (file 0600, directory
0700), written atomically (a crash leaves the old definition or the new one)
and durably (fsynced file and directory) before :func:`add_remote` returns.
The secret never leaves that file: :func:`list_remotes` and
:meth:`Remote.public` omit it, and nothing logs it.

:meth:`Remote.client` builds a boto3 client (path-style addressing, SigV4,
bounded retries and timeouts) for the workers that replicate or tier; it is
blocking, so trio code calls it from a worker thread.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .drives import fsync_dir
from .errors import StoreError

__all__ = ["Remote", "RemoteError", "add_remote", "list_remotes", "load_remote", "remove_remote"]

REMOTES_DIR = "remotes"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0


class RemoteError(StoreError):
    """A remote definition that is missing, malformed or unusable."""


@dataclass(frozen=True)
class Remote:
    """One S3 endpoint and the credentials objfs uses there."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    #: A CA bundle to verify the endpoint's TLS certificate with ("" = the system's).
    ca_bundle: str = ""

    def public(self) -> dict[str, Any]:
        """The definition without the secret, for listings and logs."""
        fields = asdict(self)
        del fields["secret_key"]
        return fields

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint (blocking; call from a worker thread)."""
        import boto3  # imported here: only the processes that talk to remotes pay for it
        from botocore.config import Config

        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            # Checksums only when the operation requires one: not every S3
            # system the hospital runs accepts the newest trailer checksums.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=config,
            verify=self.ca_bundle or None,
        )


def _check(name: str, endpoint: str, access_key: str, secret_key: str, region: str) -> None:
    if not NAME_RE.match(name):
        raise RemoteError(f"remote name {name!r}: use 1-63 of a-z, 0-9, '-', '_', starting with a letter or digit")
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise RemoteError(f"remote endpoint {endpoint!r}: expected http://HOST[:PORT] or https://HOST[:PORT]")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise RemoteError(f"remote endpoint {endpoint!r}: give the service URL only, without a path")
    if not access_key or not secret_key:
        raise RemoteError("a remote needs an access key and a secret key")
    if not region or not re.match(r"^[a-z0-9-]{1,32}$", region):
        raise RemoteError(f"remote region {region!r} is not a region name")


def _directory(root: str | os.PathLike[str]) -> Path:
    return Path(root) / REMOTES_DIR


def add_remote(
    root: str | os.PathLike[str],
    name: str,
    *,
    endpoint: str,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    ca_bundle: str = "",
    replace: bool = False,
) -> Remote:
    """Define (or with ``replace``, redefine) remote ``name``; durable when this returns."""
    _check(name, endpoint, access_key, secret_key, region)
    if ca_bundle and not Path(ca_bundle).is_file():
        raise RemoteError(f"CA bundle {ca_bundle} is not a file")
    directory = _directory(root)
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / f"{name}.json"
    if path.exists() and not replace:
        raise RemoteError(f"remote {name} exists (remove it first, or replace it)")
    remote = Remote(name, endpoint.rstrip("/"), access_key, secret_key, region, ca_bundle)
    tmp = directory / f".{name}.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older tmp file may have kept looser bits
        os.write(fd, json.dumps(asdict(remote), indent=2).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(directory)
    return remote


def load_remote(root: str | os.PathLike[str], name: str) -> Remote:
    """Remote ``name`` as defined; :class:`RemoteError` when it is not."""
    if not NAME_RE.match(name):
        raise RemoteError(f"no remote {name!r}")
    path = _directory(root) / f"{name}.json"
    try:
        fields = json.loads(path.read_text())
    except FileNotFoundError:
        raise RemoteError(f"no remote {name} (objfs remote add)") from None
    except (OSError, ValueError) as exc:
        raise RemoteError(f"remote {name}: cannot read {path}: {exc}") from None
    try:
        return Remote(**fields)
    except TypeError as exc:
        raise RemoteError(f"remote {name}: {path} is malformed: {exc}") from None


def list_remotes(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every remote's definition, without secrets, by name."""
    directory = _directory(root)
    if not directory.is_dir():
        return []
    names = sorted(p.stem for p in directory.glob("*.json") if NAME_RE.match(p.stem))
    return [load_remote(root, name).public() for name in names]


def remove_remote(root: str | os.PathLike[str], name: str) -> None:
    """Forget remote ``name``; durable when this returns.

    The caller refuses first when a replication rule or a tier still uses
    the remote (see ``objfs remote remove``).
    """
    load_remote(root, name)
    path = _directory(root) / f"{name}.json"
    path.unlink()
    fsync_dir(path.parent)
