"""The store's configuration file, ``STORE/objfs.toml``.

Loading validates every value and fails loudly (:class:`ConfigError`) naming
the bad setting; nothing falls back silently to a default once a value is
given.
"""

from __future__ import annotations

import os
import re
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

CONFIG_NAME = "objfs.toml"
KEY_FILE_NAME = "keys/objfs-keys.json"
#: The on-disk format this objfs writes. A store whose ``[store]`` table has no
#: ``format`` is format 1 (made before formats were recorded) and opens as is;
#: ``objfs upgrade`` records the current one. A newer format than this is refused.
#: Format 3 packs small blobs into volume files (:mod:`.volumes`); older formats
#: keep every fragment in a file of its own until upgraded. Format 4 writes new
#: blobs' frames with a CRC per block (:data:`.fragments.CRC_BLOCK`), so a small
#: read checks one block, not a whole frame; blobs written before keep theirs.
STORE_FORMAT = 4
#: The first format that packs small blobs into volumes.
PACKED_FORMAT = 3
#: The first format whose new blobs carry a CRC per block of each frame.
BLOCK_CRC_FORMAT = 4
#: Objects up to this many bytes are packed into volumes by default (a CT slice is ~0.5 MiB).
DEFAULT_PACK_MAX = 1 << 20
MAX_DRIVES_PER_TIER = 16
EC_BACKENDS = ("isa_l_rs_cauchy", "liberasurecode_rs_vand", "isa_l_rs_vand")
DEFAULT_BACKEND = "isa_l_rs_cauchy"
_EC_RE = re.compile(r"^(\d+)\+(\d+)$")


@dataclass(frozen=True)
class TierConfig:
    """A set of drives sharing one erasure-code profile."""

    name: str
    k: int
    m: int
    drives: tuple[Path, ...]
    backend: str = DEFAULT_BACKEND
    #: A remote S3 tier: the remote's name (``objfs remote add``); empty for a tier of local drives.
    remote: str = ""
    #: The bucket on the remote, and the key prefix objfs writes under there.
    bucket: str = ""
    prefix: str = ""
    #: A read of a version on this tier queues its move back to the first tier.
    promote_on_read: bool = False

    @property
    def is_remote(self) -> bool:
        return bool(self.remote)


@dataclass(frozen=True)
class S3Config:
    host: str = "127.0.0.1"
    port: int = 9000
    region: str = "us-east-1"
    max_body_bytes: int = 5 * 1024**3
    max_connections: int = 256
    #: HTTPS under ``objfs serve`` and ``s3sidecar``: certificate and key (PEM); both or neither.
    tls_certfile: str | None = None
    tls_keyfile: str | None = None


@dataclass(frozen=True)
class DicomConfig:
    port: int = 11112
    aet: str = "OBJFS"
    bucket: str = "pacs"
    allowed_aets: tuple[str, ...] = ()  # empty: any calling AE is accepted
    duplicates: str = "keep"  # keep | replace | reject
    destinations: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: More AE titles on the same port, each with its bucket (``[dicom.aets]``);
    #: ``aet`` serves ``bucket`` as before.
    aets: dict[str, str] = field(default_factory=dict)
    #: DICOM TLS (PS3.15 B.1): certificate and key (PEM); both or neither.
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    #: With TLS, peers must present a certificate signed by this CA (PEM).
    tls_ca_file: str | None = None
    #: Processes serving associations (objfs/dicom/processes.py); None: one per CPU core.
    processes: int | None = None

    def buckets_by_aet(self) -> dict[str, str]:
        """Every AE title served and its bucket, the main ``aet`` first."""
        return {self.aet: self.bucket, **self.aets}


#: The most ``[dicom] processes`` accepted (each process holds a store handle and its own volumes).
MAX_DICOM_PROCESSES = 64


@dataclass(frozen=True)
class DicomwebConfig:
    """``[dicomweb]``: the DICOMweb front; ``objfs serve`` starts it only when ``port`` is set."""

    host: str = "127.0.0.1"
    port: int | None = None
    bucket: str | None = None  # None: the gateway's [dicom] bucket
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call it ("*" for any)


@dataclass(frozen=True)
class AdminConfig:
    """``[admin]``: the admin HTTP endpoint of ``objfs serve`` (health, readiness, metrics, dashboard)."""

    host: str = "127.0.0.1"
    port: int = 9100


@dataclass(frozen=True)
class AuditConfig:
    """``[audit]``: rotation of the audit log into sealed segments, and a copy of every line to syslog."""

    #: The live log is sealed into a segment once it reaches this size (0: never rotated automatically).
    segment_bytes: int = 64 << 20
    #: ``udp://HOST:PORT`` or a unix datagram socket path (``/dev/log``); "" sends nothing.
    syslog: str = ""


#: Storage classes and the tier each maps to by default (when a tier of that name exists).
DEFAULT_CLASS_TIERS = (("STANDARD_IA", "warm"), ("GLACIER_IR", "archive"))
#: The seed policy for buckets without rules: warm after 90 days, archive after 7 years.
DEFAULT_TRANSITIONS = ((90, "STANDARD_IA"), (7 * 365, "GLACIER_IR"))


@dataclass(frozen=True)
class LifecycleConfig:
    """``[lifecycle]`` in objfs.toml."""

    #: Seconds a lifecycle day lasts (86400; a test or demo shortens it, as RGW's rgw_lc_debug_interval).
    day_seconds: float = 86400.0
    #: Seconds between two passes of the lifecycle loop of ``objfs serve``.
    interval_seconds: float = 3600.0
    #: Bytes per second the mover copies at most (0: no limit).
    max_bytes_per_second: int = 0
    #: Store-wide default transitions (days, storage class) for buckets without rules.
    default_transitions: tuple[tuple[int, str], ...] = DEFAULT_TRANSITIONS
    #: Every colder tier promotes on read (as if each had ``promote_on_read``).
    promote_on_read: bool = False
    #: Lifecycle days a promoted version stays on the first tier before the rules move it again.
    promoted_days: int = 30
    #: A new study of a patient brings that patient's earlier studies back to the first tier
    #: (default: on when the store has a colder tier; objfs/dicom/priors.py).
    promote_priors: bool = False
    #: How many of the patient's most recent earlier studies are promoted (0: all of them).
    prior_studies: int = 3
    #: The modalities whose priors are promoted (DICOM Modality codes such as "CT", "MR"; empty: all).
    prior_modalities: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplicationConfig:
    """``[replication]`` in objfs.toml."""

    #: Bytes per second the sender sends at most, all remotes together (0: no limit).
    max_bytes_per_second: int = 0
    #: Seconds the sender waits when its queue is empty.
    interval_seconds: float = 1.0


@dataclass(frozen=True)
class StoreConfig:
    """Everything ``objfs.toml`` says, validated."""

    root: Path
    store_id: str
    segment_size: int
    tiers: tuple[TierConfig, ...]
    s3: S3Config
    dicom: DicomConfig
    #: On-disk format of the store (see STORE_FORMAT).
    format: int = 1
    #: Blobs of at most this many bytes go into volume files (0: never; only from format 3).
    pack_max: int = 0
    #: The drives are plain directories (``objfs init`` without ``--drive``),
    #: not mount points: ``objfs replace-drive`` accepts a directory then.
    directory_drives: bool = False
    dicomweb: DicomwebConfig = field(default_factory=DicomwebConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    #: Seconds after a write during which a version that took its bucket's
    #: default retention may still be renamed and get its POSIX attributes
    #: set (write-to-temp-then-rename, as rsync and many PACS do). Its
    #: content can never change, nor can it be deleted, from the first commit.
    worm_commit_grace: float = 120.0
    #: Seconds a retired version's blobs stay on the drives before the
    #: collector may delete them: readers in any process that opened the
    #: version before it was retired finish undisturbed (see gc.py).
    gc_min_age: float = 300.0
    #: Longest a reader's lease keeps a retired version from being collected.
    gc_reader_grace: float = 86400.0
    #: The file holding the master key and the local KMS keys (encryption at
    #: rest); never on a drive. None: the store cannot encrypt.
    key_file: Path | None = None
    #: S3 storage class -> tier name (see :mod:`.tiers`); every value names a tier.
    storage_classes: dict[str, str] = field(default_factory=dict)
    #: ``[lifecycle]``: the length of a lifecycle day, the mover's pace and the store-wide default rules.
    lifecycle: LifecycleConfig = field(default_factory=lambda: LifecycleConfig())
    #: ``[replication]``: the sender's bandwidth limit and pace.
    replication: ReplicationConfig = field(default_factory=lambda: ReplicationConfig())

    @property
    def hot(self) -> TierConfig:
        return self.tiers[0]

    def tier(self, name: str) -> TierConfig:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise ConfigError(f"no tier named {name!r} in {self.root / CONFIG_NAME}")


def parse_ec(text: str) -> tuple[int, int]:
    """Parse ``"K+M"`` into ``(k, m)``, checking the bounds pyeclib accepts."""
    match = _EC_RE.match(str(text).strip())
    if not match:
        raise ConfigError(f"bad EC profile {text!r}: expected K+M, e.g. 4+2")
    k, m = int(match.group(1)), int(match.group(2))
    if k < 1 or m < 1:
        raise ConfigError(f"bad EC profile {text!r}: K and M must be at least 1")
    if k + m > MAX_DRIVES_PER_TIER:
        raise ConfigError(f"bad EC profile {text!r}: K+M is at most {MAX_DRIVES_PER_TIER}")
    return k, m


def _require(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing setting {key!r}")
    value = table[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}: {key!r} must be a {kind.__name__}, not {value!r}")
    return value


def _audit_config(raw: dict[str, Any], where: str) -> AuditConfig:
    _only(raw, {"segment_bytes", "syslog"}, where)
    segment_bytes = _optional(raw, "segment_bytes", int, 64 << 20, where)
    if segment_bytes != 0 and segment_bytes < 4096:
        raise ConfigError(f"{where}: segment_bytes must be 0 (no rotation) or at least 4096")
    syslog = _optional(raw, "syslog", str, "", where)
    if syslog and not (syslog.startswith("udp://") or syslog.startswith("/")):
        raise ConfigError(f"{where}: syslog must be udp://HOST:PORT or the path of a unix socket such as /dev/log")
    return AuditConfig(segment_bytes=segment_bytes, syslog=syslog)


def _optional(table: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    if key not in table:
        return default
    return _require(table, key, kind, where)


def _only(table: dict[str, Any], allowed: set[str], where: str) -> dict[str, Any]:
    """Refuse settings objfs does not know: a typo must not be silently ignored."""
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}")
    return table


def _port(value: int, where: str) -> int:
    if not 0 <= value <= 65535:
        raise ConfigError(f"{where}: port {value} is out of range")
    return value


def load_config(root: str | os.PathLike[str], *, text: str | None = None) -> StoreConfig:
    """Read and validate ``root/objfs.toml`` (or ``text``, a new version of it, before it is written)."""
    root = Path(root).resolve()
    path = root / CONFIG_NAME
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} is a file, not a store directory")
    try:
        data = tomllib.loads(path.read_text() if text is None else text)
    except FileNotFoundError:
        raise ConfigError(f"{root} is not an objfs store (no {CONFIG_NAME}); run 'objfs init' first") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied (run objfs as the store's owner)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    where = str(path)
    known = {
        "store",
        "tiers",
        "s3",
        "dicom",
        "dicomweb",
        "worm",
        "gc",
        "encryption",
        "lifecycle",
        "storage_classes",
        "admin",
        "audit",
        "replication",
    }
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}")
    store = _only(
        _require(data, "store", dict, where), {"id", "segment_size", "format", "directory_drives", "pack_max"}, where + " [store]"
    )
    store_id = _require(store, "id", str, where + " [store]")
    store_format = _optional(store, "format", int, 1, where + " [store]")
    if store_format > STORE_FORMAT:
        raise ConfigError(
            f"{where}: the store is format {store_format}, written by a newer objfs; this one reads up to {STORE_FORMAT}"
        )
    if store_format < 1:
        raise ConfigError(f"{where} [store]: format {store_format} does not exist")
    directory_drives = _optional(store, "directory_drives", bool, False, where + " [store]")
    pack_max = _optional(store, "pack_max", int, DEFAULT_PACK_MAX, where + " [store]")
    if not 0 <= pack_max <= 16 << 20:
        raise ConfigError(f"{where} [store]: pack_max must be between 0 (never pack) and 16 MiB")
    if store_format < PACKED_FORMAT:
        pack_max = 0  # an older store keeps its layout until `objfs upgrade`
    segment_size = _optional(store, "segment_size", int, 1 << 20, where + " [store]")
    if not 64 * 1024 <= segment_size <= 64 << 20:
        raise ConfigError(f"{where}: segment_size must be between 64 KiB and 64 MiB")
    tiers_raw = _require(data, "tiers", list, where)
    if not tiers_raw:
        raise ConfigError(f"{where}: at least one tier is needed")
    tiers = []
    names = set()
    for i, raw in enumerate(tiers_raw):
        tw = f"{where} [[tiers]] #{i + 1}"
        _only(raw, {"name", "ec", "backend", "drives", "remote", "bucket", "prefix", "promote_on_read"}, tw)
        name = _require(raw, "name", str, tw)
        if name in names:
            raise ConfigError(f"{tw}: duplicate tier name {name!r}")
        names.add(name)
        promote = _optional(raw, "promote_on_read", bool, False, tw)
        if "remote" in raw:
            tiers.append(_remote_tier(raw, name, promote, first=not tiers, where=tw))
            continue
        k, m = parse_ec(_require(raw, "ec", str, tw))
        backend = _optional(raw, "backend", str, DEFAULT_BACKEND, tw)
        if backend not in EC_BACKENDS:
            raise ConfigError(f"{tw}: backend {backend!r} is not one of {EC_BACKENDS}")
        if backend == "isa_l_rs_vand" and m > 4:
            raise ConfigError(f"{tw}: isa_l_rs_vand cannot reconstruct with more than 4 parity fragments")
        drives_raw = _require(raw, "drives", list, tw)
        drives = tuple((root / d).resolve() if not os.path.isabs(d) else Path(d) for d in drives_raw)
        if len(set(drives)) != len(drives):
            raise ConfigError(f"{tw}: a drive is listed twice")
        if len(drives) > MAX_DRIVES_PER_TIER:
            raise ConfigError(f"{tw}: at most {MAX_DRIVES_PER_TIER} drives per tier")
        if len(drives) < k + m:
            raise ConfigError(f"{tw}: EC {k}+{m} needs at least {k + m} drives, {len(drives)} given")
        tiers.append(TierConfig(name=name, k=k, m=m, drives=drives, backend=backend, promote_on_read=promote))
    s3raw = _only(
        _optional(data, "s3", dict, {}, where),
        {"host", "port", "region", "max_body_bytes", "max_connections", "tls_certfile", "tls_keyfile"},
        where + " [s3]",
    )
    s3tls = {name: _optional(s3raw, name, str, None, where + " [s3]") for name in ("tls_certfile", "tls_keyfile")}
    s3tls = {name: str(root / value) if value and not os.path.isabs(value) else value for name, value in s3tls.items()}
    if bool(s3tls["tls_certfile"]) != bool(s3tls["tls_keyfile"]):
        raise ConfigError(f"{where} [s3]: tls_certfile and tls_keyfile go together")
    s3 = S3Config(
        host=_optional(s3raw, "host", str, "127.0.0.1", where + " [s3]"),
        port=_port(_optional(s3raw, "port", int, 9000, where + " [s3]"), where + " [s3]"),
        region=_optional(s3raw, "region", str, "us-east-1", where + " [s3]"),
        max_body_bytes=_optional(s3raw, "max_body_bytes", int, 5 * 1024**3, where + " [s3]"),
        max_connections=_optional(s3raw, "max_connections", int, 256, where + " [s3]"),
        **s3tls,
    )
    dw = where + " [dicom]"
    draw = _only(
        _optional(data, "dicom", dict, {}, where),
        {
            "port",
            "aet",
            "bucket",
            "allowed_aets",
            "duplicates",
            "destinations",
            "aets",
            "tls_certfile",
            "tls_keyfile",
            "tls_ca_file",
            "processes",
        },
        dw,
    )
    dup = _optional(draw, "duplicates", str, "keep", dw)
    if dup not in ("keep", "replace", "reject"):
        raise ConfigError(f"{dw}: duplicates must be keep, replace or reject, not {dup!r}")
    dests = {}
    for aet, addr in _optional(draw, "destinations", dict, {}, dw).items():
        if not isinstance(addr, str) or ":" not in addr:
            raise ConfigError(f"{dw}: destination {aet!r} must be 'host:port', not {addr!r}")
        host, _, port = addr.rpartition(":")
        if not port.isdigit():
            raise ConfigError(f"{dw}: destination {aet!r} has a bad port in {addr!r}")
        dests[aet] = (host, _port(int(port), dw))
    allowed = _optional(draw, "allowed_aets", list, [], dw)
    aets = {}
    for title, bucket in _optional(draw, "aets", dict, {}, dw).items():
        if not isinstance(bucket, str) or not 0 < len(title.strip()) <= 16:
            raise ConfigError(f"{dw}: aets maps an AE title (1-16 characters) to a bucket name, not {title!r} = {bucket!r}")
        aets[title.strip()] = bucket
    tls = {name: _optional(draw, name, str, None, dw) for name in ("tls_certfile", "tls_keyfile", "tls_ca_file")}
    tls = {name: str(root / value) if value and not os.path.isabs(value) else value for name, value in tls.items()}
    if bool(tls["tls_certfile"]) != bool(tls["tls_keyfile"]):
        raise ConfigError(f"{dw}: tls_certfile and tls_keyfile go together")
    if tls["tls_ca_file"] and not tls["tls_certfile"]:
        raise ConfigError(f"{dw}: tls_ca_file (client certificates) needs tls_certfile and tls_keyfile")
    processes = _optional(draw, "processes", int, None, dw)
    if processes is not None and not 1 <= processes <= MAX_DICOM_PROCESSES:
        raise ConfigError(f"{dw}: processes must be 1 to {MAX_DICOM_PROCESSES} (or left out: one per CPU core), not {processes}")
    dicom = DicomConfig(
        processes=processes,
        port=_port(_optional(draw, "port", int, 11112, dw), dw),
        aet=_optional(draw, "aet", str, "OBJFS", dw),
        bucket=_optional(draw, "bucket", str, "pacs", dw),
        allowed_aets=tuple(str(a) for a in allowed),
        duplicates=dup,
        destinations=dests,
        aets=aets,
        **tls,
    )
    dicomweb = _dicomweb_config(_optional(data, "dicomweb", dict, {}, where), where + " [dicomweb]")
    araw = _only(_optional(data, "admin", dict, {}, where), {"host", "port"}, where + " [admin]")
    admin = AdminConfig(
        host=_optional(araw, "host", str, "127.0.0.1", where + " [admin]"),
        port=_port(_optional(araw, "port", int, 9100, where + " [admin]"), where + " [admin]"),
    )
    audit = _audit_config(_optional(data, "audit", dict, {}, where), where + " [audit]")
    worm = _only(_optional(data, "worm", dict, {}, where), {"commit_grace_seconds"}, where + " [worm]")
    grace = _optional(worm, "commit_grace_seconds", int, 120, where + " [worm]")
    if not 0 <= grace <= 3600:
        raise ConfigError(f"{where} [worm]: commit_grace_seconds must be between 0 and 3600")
    gc = _only(_optional(data, "gc", dict, {}, where), {"min_age_seconds", "reader_grace_seconds"}, where + " [gc]")
    gc_min_age = _optional(gc, "min_age_seconds", int, 300, where + " [gc]")
    if not 0 <= gc_min_age <= 30 * 86400:
        raise ConfigError(f"{where} [gc]: min_age_seconds must be between 0 and {30 * 86400}")
    gc_grace = _optional(gc, "reader_grace_seconds", int, 86400, where + " [gc]")
    if not 60 <= gc_grace <= 30 * 86400:
        raise ConfigError(f"{where} [gc]: reader_grace_seconds must be between 60 and {30 * 86400}")
    enc = _only(_optional(data, "encryption", dict, {}, where), {"key_file"}, where + " [encryption]")
    key_file = None
    if "key_file" in enc:
        raw_key_file = _require(enc, "key_file", str, where + " [encryption]")
        key_file = (root / raw_key_file).resolve() if not os.path.isabs(raw_key_file) else Path(raw_key_file)
        for tier in tiers:
            if any(key_file == d or d in key_file.parents for d in tier.drives):
                raise ConfigError(f"{where} [encryption]: key_file must not be on a drive (stolen drives would carry it)")
    storage_classes = _storage_classes(_optional(data, "storage_classes", dict, {}, where), tiers, where)
    lifecycle = _lifecycle(
        _optional(data, "lifecycle", dict, {}, where), storage_classes, where + " [lifecycle]", tiered=len(tiers) > 1
    )
    raw_repl = _optional(data, "replication", dict, {}, where)
    _only(raw_repl, {"max_bytes_per_second", "interval_seconds"}, where + " [replication]")
    repl_rate = _optional(raw_repl, "max_bytes_per_second", int, 0, where + " [replication]")
    repl_interval = raw_repl.get("interval_seconds", 1.0)
    if (
        repl_rate < 0
        or isinstance(repl_interval, bool)
        or not isinstance(repl_interval, (int, float))
        or not 0 < repl_interval <= 3600
    ):
        raise ConfigError(f"{where} [replication]: max_bytes_per_second >= 0, interval_seconds in (0, 3600]")
    return StoreConfig(
        root=root,
        store_id=store_id,
        segment_size=segment_size,
        tiers=tuple(tiers),
        s3=s3,
        dicom=dicom,
        format=store_format,
        pack_max=pack_max,
        directory_drives=directory_drives,
        dicomweb=dicomweb,
        admin=admin,
        audit=audit,
        worm_commit_grace=float(grace),
        gc_min_age=float(gc_min_age),
        gc_reader_grace=float(gc_grace),
        key_file=key_file,
        storage_classes=storage_classes,
        lifecycle=lifecycle,
        replication=ReplicationConfig(repl_rate, float(repl_interval)),
    )


def _storage_classes(raw: dict[str, Any], tiers: list[TierConfig], where: str) -> dict[str, str]:
    """STANDARD is the first tier; STANDARD_IA and GLACIER_IR the tiers named warm and archive, unless set."""
    names = [t.name for t in tiers]
    classes = {"STANDARD": names[0]}
    classes.update((cls, tier) for cls, tier in DEFAULT_CLASS_TIERS if tier in names)
    for cls, tier in raw.items():
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", cls):
            raise ConfigError(f"{where} [storage_classes]: {cls!r} is not a storage class name")
        if not isinstance(tier, str) or tier not in names:
            raise ConfigError(f"{where} [storage_classes]: {cls} names no tier ({tier!r}; tiers: {names})")
        classes[cls] = tier
    return classes


def _remote_tier(raw: dict[str, Any], name: str, promote: bool, *, first: bool, where: str) -> TierConfig:
    """A tier on a bucket of a remote S3 system (see :mod:`.remotetier`); never the first tier."""
    if first:
        raise ConfigError(f"{where}: the first tier receives new objects and must be local drives")
    if "drives" in raw or "ec" in raw:
        raise ConfigError(f"{where}: a remote tier has no drives and no EC profile (the remote keeps its own)")
    remote = _require(raw, "remote", str, where)
    bucket = _require(raw, "bucket", str, where)
    prefix = _optional(raw, "prefix", str, "", where)
    if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket):
        raise ConfigError(f"{where}: {bucket!r} is not an S3 bucket name")
    if prefix.startswith("/") or ".." in prefix.split("/"):
        raise ConfigError(f"{where}: prefix {prefix!r} must be a relative key prefix")
    return TierConfig(name=name, k=1, m=0, drives=(), remote=remote, bucket=bucket, prefix=prefix, promote_on_read=promote)


def _lifecycle(raw: dict[str, Any], classes: dict[str, str], where: str, *, tiered: bool = False) -> LifecycleConfig:
    _only(
        raw,
        {
            "day_seconds",
            "interval_seconds",
            "max_bytes_per_second",
            "default_transitions",
            "promote_on_read",
            "promoted_days",
            "promote_priors",
            "prior_studies",
            "prior_modalities",
        },
        where,
    )
    day = _optional(raw, "day_seconds", int, 86400, where)
    if not 1 <= day <= 86400:
        raise ConfigError(f"{where}: day_seconds must be between 1 and 86400")
    interval = _optional(raw, "interval_seconds", int, 3600, where)
    if not 1 <= interval <= 7 * 86400:
        raise ConfigError(f"{where}: interval_seconds must be between 1 and {7 * 86400}")
    rate = _optional(raw, "max_bytes_per_second", int, 0, where)
    if rate < 0:
        raise ConfigError(f"{where}: max_bytes_per_second must not be negative")
    transitions = DEFAULT_TRANSITIONS
    if "default_transitions" in raw:
        transitions = []
        for item in _require(raw, "default_transitions", list, where):
            if not isinstance(item, dict):
                raise ConfigError(f'{where}: default_transitions holds tables {{days = N, storage_class = "..."}}')
            _only(item, {"days", "storage_class"}, where + " default_transitions")
            days = _require(item, "days", int, where + " default_transitions")
            cls = _require(item, "storage_class", str, where + " default_transitions")
            if days < 0:
                raise ConfigError(f"{where}: default_transitions days must not be negative")
            if cls not in classes:
                raise ConfigError(f"{where}: default_transitions names storage class {cls!r}, which maps to no tier")
            transitions.append((days, cls))
        transitions = tuple(transitions)
    # The seed policy applies only to the tiers that exist.
    transitions = tuple((d, c) for d, c in transitions if c in classes)
    promote = _optional(raw, "promote_on_read", bool, False, where)
    promoted_days = _optional(raw, "promoted_days", int, 30, where)
    if promoted_days < 0:
        raise ConfigError(f"{where}: promoted_days must not be negative")
    # Priors are promoted only where there is a colder tier to bring them back from.
    priors = _optional(raw, "promote_priors", bool, True, where) and tiered
    prior_studies = _optional(raw, "prior_studies", int, 3, where)
    if prior_studies < 0:
        raise ConfigError(f"{where}: prior_studies must not be negative")
    modalities = _prior_modalities(raw, where)
    return LifecycleConfig(
        float(day), float(interval), rate, transitions, promote, promoted_days, priors, prior_studies, modalities
    )


#: A DICOM Modality code (value representation CS: upper-case letters, digits, underscore; at most 16).
_MODALITY_RE = re.compile(r"^[A-Z0-9_]{1,16}$")


def _prior_modalities(raw: dict[str, Any], where: str) -> tuple[str, ...]:
    """``prior_modalities``: a list of distinct Modality codes; a code the index could never match is refused."""
    codes = _optional(raw, "prior_modalities", list, [], where)
    for code in codes:
        if not isinstance(code, str) or not _MODALITY_RE.match(code):
            hint = f" (did you mean {code.strip().upper()!r}?)" if isinstance(code, str) and code.strip() else ""
            raise ConfigError(f'{where}: prior_modalities holds DICOM Modality codes such as "CT" or "MR", not {code!r}{hint}')
    if len(set(codes)) != len(codes):
        raise ConfigError(f"{where}: prior_modalities names a modality twice: {codes}")
    return tuple(codes)


def _dicomweb_config(raw: dict[str, Any], where: str) -> DicomwebConfig:
    _only(raw, {"host", "port", "bucket", "cors_origins"}, where)
    port = _optional(raw, "port", int, None, where)
    origins = _optional(raw, "cors_origins", list, [], where)
    if not all(isinstance(o, str) and o for o in origins):
        raise ConfigError(f"{where}: cors_origins must be a list of origins such as 'https://viewer.example'")
    return DicomwebConfig(
        host=_optional(raw, "host", str, "127.0.0.1", where),
        port=None if port is None else _port(port, where),
        bucket=_optional(raw, "bucket", str, None, where),
        cors_origins=tuple(origins),
    )


def render_config(
    drives: list[str],
    k: int,
    m: int,
    *,
    segment_size: int = 1 << 20,
    backend: str = DEFAULT_BACKEND,
    directory_drives: bool = False,
    key_file: str = KEY_FILE_NAME,
) -> str:
    """The text of a new ``objfs.toml`` with one hot tier, in the current format."""
    drive_list = ",\n".join(f"    {_toml_str(d)}" for d in drives)
    directories = (
        "# The drives are directories, not mount points: replace-drive accepts a directory.\ndirectory_drives = true\n"
        if directory_drives
        else ""
    )
    return f"""# objfs store configuration. Every value is checked at start-up.
[store]
id = "{uuid.uuid4()}"
# On-disk format; `objfs upgrade` moves an older store to the current one.
format = {STORE_FORMAT}
segment_size = {segment_size}
{directories}
# The first tier receives new objects.
[[tiers]]
name = "hot"
ec = "{k}+{m}"
backend = "{backend}"
drives = [
{drive_list},
]

[s3]
host = "127.0.0.1"
port = 9000
region = "us-east-1"
# HTTPS: certificate and key (PEM, relative to the store), both or neither.
# tls_certfile = "tls/s3.crt"
# tls_keyfile = "tls/s3.key"

[worm]
# A file that takes its bucket's default retention may still be renamed (and
# its times and mode set) for this many seconds after it is written, so
# write-to-temp-then-rename works; it can never be altered or deleted.
commit_grace_seconds = 120

[gc]
# A deleted or replaced version's fragments stay this many seconds before the
# collector removes them, so readers that opened it finish; open readers in
# any process keep it longer, up to reader_grace_seconds.
min_age_seconds = 300
reader_grace_seconds = 86400

[encryption]
# Master key and local KMS keys for encryption at rest (mode 0600). Keep it off
# the drives and back it up apart from them: without it encrypted objects are lost.
key_file = {_toml_str(key_file)}

[dicomweb]
# The DICOMweb front (QIDO-RS, WADO-RS, STOW-RS under /dicom-web) for web
# viewers; 'objfs serve' starts it when a port is set.
host = "127.0.0.1"
# port = 8042
# Browser origins allowed to call it (CORS), e.g. ["https://viewer.example"].
cors_origins = []

[audit]
# The audit log is sealed into a read-only segment when it reaches this size;
# the hash chain runs across segments ('objfs audit verify' checks them all).
segment_bytes = 67108864
# Also send every audit line to syslog: "udp://127.0.0.1:514" or "/dev/log".
# syslog = "/dev/log"

[admin]
# Health (/healthz, /readyz), Prometheus metrics (/metrics) and the dashboard
# (/, login with a store key). Keep it on loopback or a management network.
host = "127.0.0.1"
port = 9100

[dicom]
port = 11112
aet = "OBJFS"
bucket = "pacs"
# Calling AE titles allowed to associate; empty means any.
allowed_aets = []
# What a C-STORE of an already stored SOP Instance UID does: keep, replace or reject.
duplicates = "keep"
# DICOM TLS: certificate and key (PEM, relative to the store); with
# tls_ca_file, peers must present a certificate signed by that CA.
# tls_certfile = "tls/dicom.crt"
# tls_keyfile = "tls/dicom.key"
# tls_ca_file = "tls/peers-ca.crt"
# Processes serving associations (each uses a core); default: one per CPU core.
# processes = 2
# More AE titles on the same port, each with its bucket: AE title = "bucket"
[dicom.aets]
# C-MOVE destinations: AE title = "host:port"
[dicom.destinations]

"""


_STORE_TABLE = re.compile(r"^\[store\][ \t]*$", re.MULTILINE)
_FORMAT_LINE = re.compile(r"^format[ \t]*=.*$", re.MULTILINE)


def write_store_format(root: str | os.PathLike[str], store_format: int = STORE_FORMAT) -> bool:
    """Record ``store_format`` in ``[store]`` of ``root/objfs.toml``; False if it was already recorded.

    Crash-safe: the new text is written to a temporary file, fsynced and
    renamed over the old one, so the file is whole in its old or new form;
    every other line (and comment) is kept as the administrator wrote it.
    """
    root = Path(root).resolve()
    path = root / CONFIG_NAME
    text = path.read_text()
    table = _STORE_TABLE.search(text)
    if table is None:
        raise ConfigError(f"{path}: no [store] table")
    end = re.search(r"^\[", text[table.end() :], re.MULTILINE)
    body_end = table.end() + end.start() if end else len(text)
    body = text[table.end() : body_end]
    line = f"format = {store_format}"
    if _FORMAT_LINE.search(body):
        if _FORMAT_LINE.search(body).group(0).strip() == line:
            return False
        body = _FORMAT_LINE.sub(line, body, count=1)
    else:
        body = "\n" + line + body
    new = text[: table.end()] + body + text[body_end:]
    tmp = path.with_name(CONFIG_NAME + ".tmp")
    with open(tmp, "w") as f:
        f.write(new)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    os.rename(tmp, path)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    load_config(root)  # what was written reads back
    return True


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
