"""The objfs engine: erasure-coded objects on local drives, indexed in LMDB.

Public API::

    from objfs.store import Store, init_store
    store = init_store(path)           # or Store.open(path)
    store.create_bucket("pacs")
    store.put_object("pacs", "a/b.dcm", io.BytesIO(data))
    with store.open_object("pacs", "a/b.dcm") as obj:
        data = b"".join(obj.iter_range(0, obj.info.size))

Guarantee: when a mutating call returns, the change is durable (fragments
fsynced and renamed, directories fsynced, LMDB committed); if it raises, no
part of it is visible.
"""

from .crypto import Encryption
from .engine import Principal, Store, init_store
from .errors import (
    AccessDenied,
    BadDigest,
    BucketAlreadyExists,
    BucketNotEmpty,
    ConfigError,
    DataLoss,
    EncryptionKeyMismatch,
    EncryptionKeyRequired,
    EncryptionNotConfigured,
    EntityTooSmall,
    IncompleteBody,
    InsufficientDrives,
    InvalidArgument,
    InvalidBucketName,
    InvalidKey,
    InvalidPart,
    InvalidPartNumber,
    InvalidPartOrder,
    InvalidRange,
    KeyExists,
    KeyTooLong,
    MalformedPolicy,
    NoSpace,
    NoSuchBucket,
    NoSuchEncryptionKey,
    NoSuchKey,
    NoSuchUpload,
    NoSuchVersion,
    ObjectLocked,
    PreconditionFailed,
    StoreError,
)
from .keys import AccessKey
from .locks import COMPLIANCE, GOVERNANCE
from .locks import MODES as RETENTION_MODES
from .objects import Listing, ObjectInfo, ObjectReader, etag_condition_holds
from .policy import DEFAULT_ACCOUNT, canonical_id
from .policy import is_public as policy_is_public

__all__ = [
    "DEFAULT_ACCOUNT",
    "etag_condition_holds",
    "canonical_id",
    "policy_is_public",
    "MalformedPolicy",
    "Store",
    "init_store",
    "Principal",
    "ObjectInfo",
    "ObjectReader",
    "Listing",
    "StoreError",
    "ConfigError",
    "InvalidBucketName",
    "InvalidKey",
    "KeyTooLong",
    "NoSuchBucket",
    "BucketAlreadyExists",
    "BucketNotEmpty",
    "NoSuchKey",
    "NoSuchVersion",
    "KeyExists",
    "NoSuchUpload",
    "InvalidPart",
    "InvalidPartOrder",
    "EntityTooSmall",
    "BadDigest",
    "IncompleteBody",
    "PreconditionFailed",
    "InvalidPartNumber",
    "InvalidRange",
    "InsufficientDrives",
    "NoSpace",
    "DataLoss",
    "ObjectLocked",
    "AccessDenied",
    "InvalidArgument",
    "Encryption",
    "EncryptionNotConfigured",
    "EncryptionKeyRequired",
    "EncryptionKeyMismatch",
    "NoSuchEncryptionKey",
    "AccessKey",
    "RETENTION_MODES",
    "GOVERNANCE",
    "COMPLIANCE",
]
