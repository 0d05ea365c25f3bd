"""Tiers: sets of local drives with their own erasure-code profile, and the S3 storage classes that name them.

The first ``[[tiers]]`` of ``objfs.toml`` receives new objects; more tiers
(warm HDDs with a wider profile, an archive) are added with
:func:`add_tier`, which formats the new drives first and then replaces
``objfs.toml`` atomically with a version that was validated before it was
written. A version's tier is what its record's blob descriptors say
(``parts[i]["tier"]``), so ``rebuild-index`` restores it with the record and
nothing else needs to be kept. Storage classes map to tiers through
``[storage_classes]`` (STANDARD is the first tier, STANDARD_IA the tier named
``warm``, GLACIER_IR the tier named ``archive``, unless configured).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import CONFIG_NAME, DEFAULT_BACKEND, StoreConfig, load_config, parse_ec
from .drives import drive_id_for, format_drive, fsync_dir
from .errors import ConfigError, InvalidStorageClass
from .remotes import load_remote

__all__ = ["InvalidStorageClass", "TiersMixin", "add_remote_tier", "add_tier", "tier_of_record"]

if TYPE_CHECKING:
    from .engine import Store


def tier_of_record(record: dict[str, Any], default: str) -> str:
    """The tier a version's bytes live on (its first blob's; ``default`` for a record without data)."""
    parts = record.get("parts") or []
    return parts[0].get("tier", default) if parts else default


class TiersMixin:
    """Tier and storage-class operations of :class:`objfs.store.Store`."""

    def tier_for_class(self: Store, storage_class: str | None) -> str:
        """The tier a write naming a storage class goes to (None or "" is the first tier); raises InvalidStorageClass.

        A class that maps to a remote tier writes to the first tier: bytes
        reach a remote tier only through the mover, which verifies them there
        (the lifecycle rules move the version later).
        """
        if not storage_class:
            return self.config.hot.name
        tier = self.config.storage_classes.get(storage_class)
        if tier is None:
            known = ", ".join(sorted(self.config.storage_classes))
            raise InvalidStorageClass(f"storage class {storage_class!r} maps to no tier of this store (known: {known})")
        return self.config.hot.name if self.config.tier(tier).is_remote else tier

    def class_of_tier(self: Store, tier: str) -> str:
        """The storage class shown for a tier: the first class mapped to it (a tier without one shows its name)."""
        for cls, name in self.config.storage_classes.items():
            if name == tier:
                return cls
        return tier.upper()

    def storage_class_of(self: Store, record: dict[str, Any]) -> str:
        """The storage class of one version, from the tier its bytes are on."""
        return self.class_of_tier(tier_of_record(record, self.config.hot.name))

    def tier_usage(self: Store) -> list[dict[str, Any]]:
        """Per tier: EC profile, drives, storage classes, and the versions and bytes on it (kept counters)."""
        counted = self.counters.totals()["per_tier"]
        usage = {
            t.name: {"versions": counted.get(t.name, {}).get("versions", 0), "bytes": counted.get(t.name, {}).get("bytes", 0)}
            for t in self.config.tiers
        }
        out = []
        for tier in self.config.tiers:
            out.append(
                {
                    "name": tier.name,
                    "ec": f"{tier.k}+{tier.m}" if not tier.is_remote else f"s3://{tier.remote}/{tier.bucket}/{tier.prefix}",
                    "drives": [str(d) for d in tier.drives],
                    "classes": sorted(c for c, t in self.config.storage_classes.items() if t == tier.name),
                    **usage[tier.name],
                }
            )
        return out


def add_tier(
    root: str | os.PathLike[str], name: str, drives: list[str], ec: str, *, backend: str = DEFAULT_BACKEND
) -> StoreConfig:
    """Add a tier of local drives to a store: format them, then append it to ``objfs.toml``.

    The new configuration is validated in full before it replaces the old
    one (temp file, fsync, rename, directory fsync), so a bad tier never
    leaves a store that will not open. The store's running processes see the
    tier when they are restarted.
    """
    root = Path(root).resolve()
    config = _config_for_new_tier(root, name)
    k, m = parse_ec(ec)
    paths = [str(Path(p).resolve()) for p in drives]
    used = {str(d) for t in config.tiers for d in t.drives}
    for path in paths:
        if path in used:
            raise ConfigError(f"{path} is a drive of this store already")
    path = root / CONFIG_NAME
    text = path.read_text()
    drive_list = ",\n".join(f'    "{_toml_escape(p)}"' for p in paths)
    block = f'\n[[tiers]]\nname = "{name}"\nec = "{k}+{m}"\nbackend = "{backend}"\ndrives = [\n{drive_list},\n]\n'
    new_text = text.rstrip("\n") + "\n" + block
    new_config = load_config(root, text=new_text)  # the whole file, validated before anything changes
    for i, drive in enumerate(new_config.tier(name).drives):
        drive.mkdir(parents=True, exist_ok=True)
        format_drive(drive, config.store_id, drive_id_for(config.store_id, name, i))
    _replace_config(root, new_text)
    return new_config


def add_remote_tier(
    root: str | os.PathLike[str], name: str, remote: str, bucket: str, *, prefix: str = "", promote_on_read: bool = False
) -> tuple[StoreConfig, dict[str, Any]]:
    """Add a tier on bucket ``bucket`` of remote ``remote`` (``objfs remote add``); returns (config, remote facts).

    The remote must answer and the bucket exist before ``objfs.toml`` is
    replaced (atomically, validated in full first). The facts say whether
    the bucket keeps versions and has object lock (without it, locked
    versions are refused by this tier).
    """
    from .remotetier import check_remote_tier  # boto3 only for stores with a remote tier

    root = Path(root).resolve()
    _config_for_new_tier(root, name)
    load_remote(root, remote)  # RemoteError when it is not defined
    path = root / CONFIG_NAME
    text = path.read_text()
    block = f'\n[[tiers]]\nname = "{name}"\nremote = "{_toml_escape(remote)}"\nbucket = "{_toml_escape(bucket)}"\n'
    if prefix:
        block += f'prefix = "{_toml_escape(prefix)}"\n'
    if promote_on_read:
        block += "promote_on_read = true\n"
    new_text = text.rstrip("\n") + "\n" + block
    new_config = load_config(root, text=new_text)
    facts = check_remote_tier(root, new_config.tier(name))
    _replace_config(root, new_text)
    return new_config, facts


def _replace_config(root: Path, new_text: str) -> None:
    """``objfs.toml`` replaced atomically and durably (temp file, fsync, rename, directory fsync)."""
    tmp = root / (CONFIG_NAME + ".tmp")
    with open(tmp, "w") as f:
        f.write(new_text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, root / CONFIG_NAME)
    fsync_dir(root)


def _config_for_new_tier(root: Path, name: str) -> StoreConfig:
    """The store's configuration, after checking ``name`` is free and usable as a tier name."""
    config = load_config(root)
    if any(t.name == name for t in config.tiers):
        raise ConfigError(f"the store has a tier named {name!r} already")
    if not name.isidentifier():
        raise ConfigError(f"tier name {name!r}: letters, digits and underscores only")
    return config


def _toml_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
