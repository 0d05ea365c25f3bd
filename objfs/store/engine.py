"""The store: one object per process that every front and tool goes through.

``Store.open(path)`` reads ``objfs.toml``, opens the LMDB index and finds the
drives. All methods are synchronous and thread-safe; async fronts call them
through ``trio.to_thread.run_sync``. Object operations live in
:mod:`.objects`, multipart uploads in :mod:`.multipart`, scrub and heal in
:mod:`.heal`; they are mixed into :class:`Store` so callers see one API.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import access, policy
from .audit import AuditLog, audited, guarded
from .clock import Clock
from .config import CONFIG_NAME, StoreConfig, load_config, parse_ec, render_config
from .counters import Counters
from .crypto import KeyService, check_bucket_default, new_key_file
from .drives import BLOBS, BUCKETS, READABLE, Drive, drive_id_for, format_drive, fsync_dir, identify_drives
from .errors import AccessDenied, BucketAlreadyExists, BucketNotEmpty, ConfigError, InvalidArgument, NoSuchBucket
from .fragments import write_meta
from .gc import GarbageMixin
from .heal import MaintenanceMixin
from .index import DATABASES, Index, Txn, bucket_prefix, object_key
from .intents import IntentJournal
from .keys import AccessKey, KeyRing
from .leases import ReaderLeases
from .lifecycle import LifecycleMixin
from .links import LinksMixin
from .listing import ListingMixin
from .mover import MoverMixin
from .multipart import MultipartMixin
from .names import check_bucket_name
from .objects import ObjectsMixin
from .rebuild import BUCKETS_DIR
from .renames import RenamesMixin
from .replicas import ReplicasMixin
from .replication import ReplicationMixin
from .retention import RetentionMixin
from .scrub import ScrubMixin
from .spool import SpoolMixin
from .tiers import TiersMixin
from .volumes import VolumeSet

HEALTH_TTL = 1.0  # seconds a drive health check is trusted
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x00000010


class Indexer(Protocol):
    """A secondary index kept in the same transaction as the objects (e.g. DICOM).

    Registered by the process that opens the store
    (:meth:`Store.register_indexer`); the engine itself knows no indexer.
    """

    #: Named LMDB databases the indexer keeps its entries in (opened on registration).
    databases: tuple[str, ...]

    def extract(self, head: bytes, key: str) -> dict[str, Any] | None:
        """Fields to add to a new record, from the first bytes of its body."""

    def on_change(self, txn: Txn, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Update the secondary index inside the commit transaction."""

    # Optional: ``on_record(txn, old, new)``, called inside the commit for every record
    # written, delete markers and noncurrent versions included: ``old`` None for a new
    # version or marker, else the record ``new`` replaces (same id: tags, retention,
    # legal hold, attributes). Replication queues its work there (objfs/store/replication.py).


#: The system principals: background work and the local administrator, with every right.
SYSTEM_ROLES = ("heal", "gc", "scrub", "gateway", "lifecycle", "replication", "cli")


@dataclass(frozen=True)
class Principal:
    """Who asks, and what they may do: an S3 key, a local user on the mount, a DICOM AE, a system worker.

    The rights are checked by the engine (:mod:`.access`) for every call
    that carries the principal. A plain ``Principal(name)`` may read and
    write everywhere but holds none of the lock rights; an S3 key's
    principal carries the key's rights (``objfs key create``).
    ``bypass_governance`` lets a request that asks for it shorten, remove
    or harden (to COMPLIANCE) GOVERNANCE retention; nobody can bypass
    COMPLIANCE. System principals (:meth:`system`) hold every right.
    """

    name: str
    bypass_governance: bool = False
    read_only: bool = False
    buckets: tuple[str, ...] = ()  # empty: every bucket
    legal_hold: bool = False
    retention: bool = False
    is_system: bool = False
    #: The account an S3 key belongs to (:mod:`.policy`); "" for local
    #: principals (mount, gateway), which act for the archive itself.
    account: str = ""
    #: An unsigned request: no rights, only what an ACL or policy grants anyone.
    anonymous: bool = False
    #: Where the request came from and whether over TLS (policy conditions).
    source_ip: str = ""
    secure_transport: bool = False
    #: May write replicas (the key another appliance replicates with).
    replication: bool = False
    #: The front's id of the request (S3's x-amz-request-id), written on its audit lines.
    request_id: str = field(default="", compare=False)

    @classmethod
    def anonymous_request(cls, *, source_ip: str = "", secure_transport: bool = False) -> Principal:
        return cls("anonymous", read_only=True, anonymous=True, source_ip=source_ip, secure_transport=secure_transport)

    @classmethod
    def of_key(cls, key: AccessKey, front: str, *, source_ip: str = "", secure_transport: bool = False) -> Principal:
        """The principal a front acts as for an access key: ``<front>:<key name>``, the key's account and rights."""
        return cls(
            name=f"{front}:{key.name}",
            read_only=key.read_only,
            buckets=tuple(key.buckets),
            bypass_governance=key.bypass_governance,
            legal_hold=key.legal_hold,
            retention=key.retention,
            replication=key.replication,
            account=key.account,
            source_ip=source_ip,
            secure_transport=secure_transport,
        )

    @classmethod
    def system(cls, role: str, *, who: str | None = None) -> Principal:
        """A system principal (every right, every bucket), named ``role`` or ``role:who``."""
        if role not in SYSTEM_ROLES:
            raise InvalidArgument(f"unknown system principal {role!r}; one of {', '.join(SYSTEM_ROLES)}")
        name = f"{role}:{who}" if who else role
        return cls(name, bypass_governance=True, legal_hold=True, retention=True, is_system=True)

    def holds(self, right: str) -> bool:
        """Whether this principal holds ``right`` (one of :data:`.access.RIGHTS`)."""
        if self.is_system:
            return True
        return {
            access.WRITE: not self.read_only,
            access.LEGAL_HOLD: self.legal_hold and not self.read_only,
            access.RETENTION: self.retention and not self.read_only,
            access.BYPASS_GOVERNANCE: self.bypass_governance and not self.read_only,
            access.REPLICATION: self.replication and not self.read_only,
        }.get(right, False)


class Store(
    ObjectsMixin,
    ListingMixin,
    RenamesMixin,
    LinksMixin,
    RetentionMixin,
    MultipartMixin,
    MaintenanceMixin,
    ScrubMixin,
    GarbageMixin,
    SpoolMixin,
    TiersMixin,
    MoverMixin,
    LifecycleMixin,
    ReplicationMixin,
    ReplicasMixin,
):
    """An open objfs store."""

    def __init__(self, config: StoreConfig, *, io_threads: int = 32) -> None:
        self.config = config
        self.root = config.root
        self.clock = Clock()
        self.index = Index(self.root / "index")
        self.counters = Counters(self.index, config.hot.name)
        self.spool_dir = self.root / "spool"
        self.spool_dir.mkdir(exist_ok=True)
        self.sweep_spool()  # what dead processes left staged is garbage by their own names
        self.drives: dict[str, list[Drive]] = {}
        self._by_id: dict[str, Drive] = {}
        for tier in config.tiers:
            # By marker, not position: reordering drive paths in objfs.toml must not take drives offline.
            drives = identify_drives(config.store_id, tier.name, tier.drives)
            self.drives[tier.name] = drives
            self._by_id.update((d.drive_id, d) for d in drives)
        # Leaf pools only: a task in one never waits for a task in the same pool.
        self.io_pool = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="objfs-io")
        self.read_pool = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="objfs-read")
        self.prefetch_pool = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="objfs-prefetch")
        self.meta_pool = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="objfs-meta")  # tombstones
        # This process's active volume per drive: small blobs are appended there (see .volumes).
        self.volumes = VolumeSet()
        self.audit = AuditLog(self.root / "audit", segment_bytes=config.audit.segment_bytes, syslog=config.audit.syslog)
        self.indexers: list[Indexer] = []
        self._health: dict[str, tuple[float, str]] = {}
        # Process-local state other processes must see: reader leases and write intents.
        self.run_dir = self.root / "run"
        self.leases = ReaderLeases(self.run_dir)
        self.intents = IntentJournal(self.run_dir, self.index.state)
        self.encryption = KeyService(config.key_file)
        self.settle_dead_renames()  # a directory rename cut short by a crash: old tree or new, before anything reads

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    def open(cls, root: str | os.PathLike[str], **kwargs: Any) -> Store:
        """Open the store at ``root``; raises ConfigError if it is not one."""
        return cls(load_config(root), **kwargs)

    def close(self) -> None:
        for pool in (self.prefetch_pool, self.read_pool, self.io_pool, self.meta_pool):
            pool.shutdown(wait=True)
        self.volumes.close()
        self.intents.close()
        self.index.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register_indexer(self, indexer: Indexer) -> None:
        """Keep ``indexer`` in step with every later object change of this process; opens its databases.

        Called by whoever opens the store, before it is used from several
        threads. Every process that changes objects must register the same
        indexers, or its changes miss their indexes. Registering an indexer
        of a class already registered does nothing.
        """
        if any(type(known) is type(indexer) for known in self.indexers):
            return
        clash = set(indexer.databases) & set(DATABASES)
        if clash:
            raise ValueError(f"indexer databases {sorted(clash)} are the engine's own")
        for name in indexer.databases:
            self.index.open_db(name)
        self.indexers.append(indexer)

    # -- drives -------------------------------------------------------------

    def drive_by_id(self, drive_id: str) -> Drive | None:
        return self._by_id.get(drive_id)

    def all_drives(self) -> list[Drive]:
        return [d for drives in self.drives.values() for d in drives]

    def drive_state(self, drive: Drive) -> str:
        """The drive's state (see :mod:`.drives`: ok, missing, foreign, wiped, read-only, full); cached for a second.

        A drive that fails within that second fails its writes (its
        fragments cannot be renamed into place, and nothing is ever created
        in place of a drive's missing layout), which the write quorum handles.
        """
        now = time.monotonic()
        cached = self._health.get(drive.drive_id)
        if cached is not None and now - cached[0] < HEALTH_TTL:
            return cached[1]
        state = drive.state(self.config.store_id)
        self._health[drive.drive_id] = (now, state)
        return state

    def drive_healthy(self, drive: Drive) -> bool:
        """Whether the drive takes writes (state ok)."""
        return self.drive_state(drive) == "ok"

    def drive_readable(self, drive: Drive) -> bool:
        """Whether the drive's fragments can be read and removed (ok, read-only or full)."""
        return self.drive_state(drive) in READABLE

    def refresh_drive_health(self) -> None:
        """Forget cached health checks (after a drive was replaced, before a scrub)."""
        self._health.clear()

    def mark_drive_suspect(self, drive: Drive) -> None:
        """A write to ``drive`` failed: check its health afresh next time instead of trusting the cache."""
        self._health.pop(drive.drive_id, None)

    def immutable_supported(self, drive: Drive) -> bool:
        """Whether the drive's filesystem honours FS_IMMUTABLE_FL (chattr +i)."""
        probe = drive.tmp_dir / ".immutable-probe"
        try:
            probe.write_bytes(b"")
            fd = os.open(probe, os.O_RDONLY)
            try:
                buf = bytearray(struct.pack("i", 0))
                fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
                return True
            finally:
                os.close(fd)
        except OSError:
            return False
        finally:
            try:
                os.unlink(probe)
            except OSError:
                pass

    def set_immutable(self, path: Path, on: bool) -> bool:
        """Set or clear FS_IMMUTABLE_FL on a file; False where the filesystem lacks it."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            buf = bytearray(struct.pack("i", 0))
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
            flags = struct.unpack("i", buf)[0]
            flags = flags | FS_IMMUTABLE_FL if on else flags & ~FS_IMMUTABLE_FL
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, bytearray(struct.pack("i", flags)))
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.EPERM):
                return False
            raise
        finally:
            os.close(fd)

    def capacity(self) -> dict[str, int]:
        """Usable bytes of the hot tier after parity (for statfs and ``df``).

        ``{"total": ..., "free": ..., "unused": ...}``: the raw bytes of the
        tier's healthy drives scaled by k/(k+m); ``free`` is what writers may
        still use, ``unused`` also counts the blocks the drives' filesystems
        reserve for root (statfs's f_bavail and f_bfree: ``df`` shows as Used
        only what is really used). Drives that share a filesystem (directory
        drives on one disk) are counted once, so the figures never exceed
        what the disks hold.
        """
        tier = self.config.hot
        seen: set[int] = set()
        total = free = unused = 0
        for drive in self.drives[tier.name]:
            if not self.drive_healthy(drive):
                continue
            try:
                dev = os.stat(drive.path).st_dev
                vfs = os.statvfs(drive.path)
            except OSError:
                continue
            if dev in seen:
                continue
            seen.add(dev)
            total += vfs.f_blocks * vfs.f_frsize
            free += vfs.f_bavail * vfs.f_frsize
            unused += vfs.f_bfree * vfs.f_frsize
        scale = tier.k / (tier.k + tier.m)
        return {"total": int(total * scale), "free": int(free * scale), "unused": int(unused * scale)}

    def system_principal(self, role: str) -> Principal:
        """The principal of the engine's own work (heal, gc, scrub): audited under that name."""
        return Principal.system(role)

    def audit_maintenance(self, action: str, role: str, record: dict[str, Any], detail: str, *, durable: bool) -> None:
        """One audit line for what a system worker (``role``) did to a version."""
        self.record_audit(
            action,
            self.system_principal(role),
            "ok",
            durable,
            bucket=record["bucket"],
            key=record["key"],
            version=record["version"],
            detail=detail,
        )

    def record_audit(self, action: str, principal: Principal | None, outcome: str, durable: bool, **fields: Any) -> None:
        """Append one line to the audit trail (see :mod:`.audit`)."""
        if principal is not None:
            # Where the request came from and which one it was (None values are left off the line).
            fields.setdefault("ip", principal.source_ip or None)
            fields.setdefault("request", principal.request_id or None)
        self.audit.append(
            who=principal.name if principal is not None else "unknown",
            action=action,
            outcome=outcome,
            now=self.clock.now(),
            durable=durable,
            **fields,
        )

    def authorize(
        self,
        principal: Principal | None,
        action: str,
        bucket: str | None,
        key: str | None = None,
        **arguments: Any,
    ) -> None:
        """Refuse ``action`` on ``bucket`` if ``principal`` lacks the right: raises AccessDenied.

        For fronts that must decide before they start the work (S3 refuses
        before it reads a body). ``arguments`` are the lock arguments of a
        write (``retention``, ``legal_hold``), which need their own rights.
        The refusal is a durable ``denied`` audit line naming the principal
        before this raises; a principal of None (an internal call) passes.
        """
        reason = self.access_denial(principal, action, bucket, key, **arguments)
        if reason is not None:
            self.record_audit(action, principal, "denied", True, bucket=bucket, key=key, detail=reason)
            raise AccessDenied(reason)

    def access_denial(
        self,
        principal: Principal | None,
        action: str,
        bucket: str | None,
        key: str | None = None,
        prefix: str | None = None,
        **arguments: Any,
    ) -> str | None:
        """Why ``principal`` may not do ``action`` on ``bucket`` (and ``key``) now, or None (nothing audited).

        The key's rights first (:mod:`.access`, pure), then the bucket's
        owner, policy and ACLs (:mod:`.policy`, one index read; the object's
        record too when only its ACL could grant a read or its ACL). ``prefix`` is a
        listing's, for ``s3:prefix`` policy conditions.
        """
        if principal is None:
            return None
        reason = access.denial(principal, action, bucket, arguments)
        if reason is None and bucket is None and principal.anonymous:
            reason = "anonymous requests may not list buckets"
        # Creating a bucket is between a key and its rights: an existing name is the call's to report.
        if reason is not None or bucket is None or principal.is_system or action == "create-bucket":
            return reason
        if not principal.account and not principal.anonymous:
            return None  # a local front (mount, gateway): accounts, policies and ACLs are S3's
        with self.index.read() as txn:
            settings = txn.get("buckets", bucket.encode())
            if settings is None:
                return None  # the call itself will say NoSuchBucket (or create it)
            record = None
            if (
                key is not None
                and action in ("read", "head", "read-acl", "write-acl")
                and principal.account != policy.owner_account(settings)
            ):
                current = txn.get("objects", object_key(bucket, key))
                record = current if current is not None and not current.get("delete_marker") else None
        context = {
            "aws:sourceip": principal.source_ip or None,
            "aws:securetransport": "true" if principal.secure_transport else "false",
            "s3:prefix": prefix,
            "s3:object-lock-mode": (arguments.get("retention") or {}).get("mode")
            if isinstance(arguments.get("retention"), dict)
            else None,
            "s3:object-lock-legal-hold": "ON" if arguments.get("legal_hold") else None,
        }
        return policy.bucket_denial(principal, action, bucket, key, settings, record, context)

    @functools.cached_property
    def keys(self) -> KeyRing:
        """The store's S3 access keys (``objfs key create``), re-read when the file changes."""
        return KeyRing.of_store(self.root)

    def access_key(self, access_key_id: str) -> AccessKey | None:
        """The key with this id, or None; a key created meanwhile by another process is found."""
        return self.keys.get(access_key_id)

    def unlock_file(self, path: Path) -> None:
        self.set_immutable(path, False)

    # -- buckets ------------------------------------------------------------

    @audited("create-bucket", target=lambda a, k, r: {"bucket": a[0] if a else k.get("name")})
    def create_bucket(
        self, name: str, *, object_lock: bool = False, owner: str | None = None, principal: Principal | None = None
    ) -> dict[str, Any]:
        """Create an empty bucket. Durable when it returns.

        ``object_lock`` also turns versioning on, as S3 requires.
        """
        check_bucket_name(name)
        settings = {
            "name": name,
            "created": self.clock.now(),
            "owner": owner,
            "versioning": "Enabled" if object_lock else None,
            "object_lock": bool(object_lock),
            "lock_default": None,
            "tagging": {},
        }
        if principal is not None and principal.account:
            settings["owner_account"] = principal.account
        with self.index.read() as txn:
            if txn.get("buckets", name.encode()) is not None:
                raise BucketAlreadyExists(f"bucket {name!r} exists already")
        self._write_bucket_files(settings)
        with self.index.write() as txn:
            if txn.get("buckets", name.encode()) is not None:
                raise BucketAlreadyExists(f"bucket {name!r} exists already")
            txn.put("buckets", name.encode(), settings)
        return settings

    @audited("delete-bucket", target=lambda a, k, r: {"bucket": a[0] if a else k.get("name")})
    def delete_bucket(self, name: str, *, principal: Principal | None = None) -> None:
        """Remove an empty bucket (no objects, versions or unfinished uploads)."""
        with self.index.write() as txn:
            self._bucket(txn, name)
            prefix = bucket_prefix(name)
            if txn.any("objects", prefix) or txn.any("versions", prefix):
                raise BucketNotEmpty(f"bucket {name!r} is not empty")
            for _, upload in txn.scan("uploads"):
                if upload["bucket"] == name:
                    raise BucketNotEmpty(f"bucket {name!r} has unfinished multipart uploads")
            settings = txn.get("buckets", name.encode())
            txn.delete("buckets", name.encode())
        # A tombstone, not an unlink: a drive that was away must not bring the bucket back.
        self._write_bucket_files(dict(settings, deleted=True))

    def _write_bucket_files(self, settings: dict[str, Any]) -> None:
        """Bucket settings on every healthy drive, so rebuild-index restores them."""
        settings = dict(settings, gen=time.time_ns())
        for drive in self.all_drives():
            if self.drive_healthy(drive):
                try:
                    (drive.path / BUCKETS).mkdir(exist_ok=True)  # stores made before drives had it at format
                    write_meta(drive.path / BUCKETS_DIR / f"{settings['name']}.meta", drive.tmp_dir, settings)
                except OSError:
                    self.mark_drive_suspect(drive)

    @guarded("head", target=lambda a, k, r: {"bucket": a[0] if a else k.get("name")})
    def head_bucket(self, name: str, *, principal: Principal | None = None) -> dict[str, Any]:
        """The bucket's settings; raises NoSuchBucket."""
        with self.index.read() as txn:
            return self._bucket(txn, name)

    @guarded("list", target=lambda a, k, r: {"bucket": None})
    def list_buckets(self, *, principal: Principal | None = None) -> list[dict[str, Any]]:
        """Every bucket's settings; with a principal only the buckets in its scope."""
        with self.index.read() as txn:
            return [value for _, value in txn.scan("buckets") if principal is None or _lists(principal, value)]

    @audited(
        "bucket-settings",
        target=lambda a, k, r: {"bucket": a[0] if a else k.get("name"), "detail": ",".join(sorted(set(k) - {"principal"}))},
    )
    def update_bucket(self, name: str, *, principal: Principal | None = None, **changes: Any) -> dict[str, Any]:
        """Change bucket settings (versioning, lock_default, tagging, cors, encryption, ...)."""
        allowed = {
            "versioning",
            "lock_default",
            "tagging",
            "lifecycle",
            "replication",
            "owner",
            "cors",
            "acl",
            "policy",
            "public_access_block",
            "encryption",
        }
        bad = set(changes) - allowed
        if bad:
            raise InvalidArgument(f"unknown bucket settings {sorted(bad)}")
        with self.index.read() as txn:
            settings = self._bucket(txn, name)
            if "versioning" in changes:
                if changes["versioning"] not in ("Enabled", "Suspended"):
                    raise InvalidArgument("versioning must be Enabled or Suspended")
                if settings["object_lock"] and changes["versioning"] != "Enabled":
                    raise InvalidArgument("versioning cannot be suspended on a bucket with object lock")
            if "encryption" in changes:
                changes["encryption"] = check_bucket_default(self.encryption, changes["encryption"])
            settings.update(changes)
        self._write_bucket_files(settings)
        with self.index.write() as txn:
            current = self._bucket(txn, name)
            current.update(changes)
            txn.put("buckets", name.encode(), current)
        return current

    def put_bucket_policy(self, name: str, text: str | None, *, principal: Principal | None = None) -> None:
        """Set (``text``, the policy's JSON) or remove (None) a bucket's policy; MalformedPolicy if unusable."""
        parsed = policy.parse_policy(text, name) if text is not None else None
        if parsed is not None:
            with self.index.read() as txn:
                policy.check_public_policy_allowed(self._bucket(txn, name), parsed)
        self.update_bucket(name, policy=parsed, principal=principal)

    @guarded("read-acl", target=lambda a, k, r: {"bucket": a[0] if a else k.get("name")})
    def bucket_acl(self, name: str, *, principal: Principal | None = None) -> dict[str, Any]:
        """The bucket's settings, for its ACL (``acl``) and owner: the owner's, or READ_ACP's by a grant."""
        with self.index.read() as txn:
            return self._bucket(txn, name)

    @audited("write-acl", target=lambda a, k, r: {"bucket": a[0] if a else k.get("name")})
    def put_bucket_acl(self, name: str, acl: str | list[dict[str, str]], *, principal: Principal | None = None) -> None:
        """Set a bucket's ACL, canned (:data:`.policy.CANNED_ACLS`) or grants (:func:`.policy.check_acl`).

        The owner's, or WRITE_ACP's by a grant; durable (on the drives' bucket files) when it returns.
        """
        acl = policy.check_acl(acl)
        with self.index.read() as txn:
            policy.check_public_acl_allowed(self._bucket(txn, name), acl)
        self.update_bucket(name, acl=None if acl == "private" else acl)

    def put_public_access_block(self, name: str, flags: dict[str, bool] | None, *, principal: Principal | None = None) -> None:
        """Set (or remove, None) a bucket's public access block (:data:`.policy.BLOCK_FLAGS`)."""
        if flags is not None and set(flags) - set(policy.BLOCK_FLAGS):
            raise InvalidArgument(f"unknown public access block flags {sorted(set(flags) - set(policy.BLOCK_FLAGS))}")
        self.update_bucket(name, public_access_block=flags, principal=principal)

    def _bucket(self, txn: Txn, name: str) -> dict[str, Any]:
        settings = txn.get("buckets", name.encode())
        if settings is None:
            raise NoSuchBucket(f"bucket {name!r} does not exist")
        return settings


def _lists(principal: Principal, settings: dict[str, Any]) -> bool:
    """Whether ListBuckets shows this bucket to ``principal``: in its scope and, for a key, of its account."""
    if principal.anonymous:
        return False
    if principal.account and not principal.is_system and policy.owner_account(settings) != principal.account:
        return False
    return access.sees(principal, settings["name"])


def init_store(
    root: str | os.PathLike[str],
    *,
    drives: int | None = None,
    drive_paths: list[str] | None = None,
    ec: str = "4+2",
    segment_size: int = 1 << 20,
) -> Store:
    """Create a store at ``root`` and format its drives.

    With ``drive_paths`` the given directories (mount points) are used;
    otherwise ``drives`` directories (default k+m) are made under
    ``root/drives``.
    """
    root = Path(root).resolve()
    k, m = parse_ec(ec)
    if (root / CONFIG_NAME).exists():
        raise ConfigError(f"{root} is already an objfs store")
    if drive_paths:
        paths = [str(Path(p).resolve()) for p in drive_paths]
    else:
        count = drives if drives is not None else k + m
        paths = [f"drives/d{i}" for i in range(count)]
    if len(paths) < k + m:
        raise ConfigError(f"EC {k}+{m} needs at least {k + m} drives, {len(paths)} given")
    root.mkdir(parents=True, exist_ok=True)
    (root / CONFIG_NAME).write_text(render_config(paths, k, m, segment_size=segment_size, directory_drives=not drive_paths))
    try:
        config = load_config(root)
        if config.key_file is not None and not config.key_file.exists():
            new_key_file(config.key_file)
        for i, path in enumerate(config.hot.drives):
            format_drive(path, config.store_id, drive_id_for(config.store_id, "hot", i))
            precreate_fanout(path / BLOBS)
    except BaseException:
        os.unlink(root / CONFIG_NAME)
        raise
    return Store.open(root)


def precreate_fanout(blobs: Path) -> None:
    """Make the first fan-out level (``blobs/00`` .. ``blobs/ff``) of a new drive, durably.

    A young store otherwise creates (and syncs) one of these with most of
    its first objects' fragments; made here they cost one directory sync.
    The second level stays lazy (65,536 directories per drive would cost
    more to make than they save).
    """
    for i in range(256):
        (blobs / f"{i:02x}").mkdir(exist_ok=True)
    fsync_dir(blobs)
