"""Engine errors.

Every error the engine raises is a :class:`StoreError`. Fronts map these
classes to their protocol (errno for FUSE, S3 error codes, DICOM statuses) in
one place each; the engine never knows about any protocol.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every engine error."""


class ConfigError(StoreError):
    """The store's configuration is missing or has a bad value."""


class InvalidBucketName(StoreError):
    """The bucket name breaks S3's naming rules."""


class InvalidKey(StoreError):
    """The key is not valid UTF-8, too long, or has a NUL or an empty/./.. segment."""


class KeyTooLong(InvalidKey):
    """The key (or one of its path segments) is longer than allowed."""


class NoSuchBucket(StoreError):
    """The bucket does not exist."""


class BucketAlreadyExists(StoreError):
    """A bucket of that name exists already."""


class BucketNotEmpty(StoreError):
    """The bucket still holds objects, versions or uploads."""


class NoSuchKey(StoreError):
    """No current object under that key."""


class NoSuchVersion(StoreError):
    """The key exists but not that version."""


class KeyExists(StoreError):
    """The destination of a no-replace rename or create exists already."""


class NoSuchUpload(StoreError):
    """The multipart upload does not exist (never created, completed or aborted)."""


class InvalidPart(StoreError):
    """A part named in a multipart completion is missing or its ETag differs."""


class InvalidPartOrder(StoreError):
    """The parts of a multipart completion are not in ascending order."""


class EntityTooSmall(StoreError):
    """A part other than the last is smaller than the minimum part size."""


class BadDigest(StoreError):
    """The body does not match the digest the client sent."""


class IncompleteBody(StoreError):
    """The body is shorter than the length the client announced."""


class PreconditionFailed(StoreError):
    """A conditional request's condition does not hold."""


class InvalidRange(StoreError):
    """The requested byte range does not overlap the object."""


class InvalidPartNumber(InvalidRange):
    """The requested part of an object does not exist (it has fewer parts)."""


class InsufficientDrives(StoreError):
    """Fewer healthy drives than the write quorum (k+1); nothing was written."""


class NoSpace(StoreError):
    """A drive ran out of space during a write; nothing was committed."""


class DataLoss(StoreError):
    """More fragments of a segment are lost or corrupt than parity can rebuild.

    Never returned as wrong bytes: the read stops with this error.
    """


class ObjectLocked(StoreError):
    """WORM retention or a legal hold forbids this change."""


class AccessDenied(StoreError):
    """The caller's key does not allow this operation."""


class InvalidArgument(StoreError):
    """A parameter has a value the engine does not accept."""


class InvalidStorageClass(InvalidArgument):
    """A storage class no tier of this store answers to (see tiers.py)."""


class EncryptionNotConfigured(StoreError):
    """An encrypted write (or read) was asked of a store without its key file."""


class NoSuchEncryptionKey(InvalidArgument):
    """The named KMS key (or key version) does not exist in the store's key file."""


class EncryptionKeyRequired(AccessDenied):
    """The object is encrypted with a customer key (SSE-C) and none was given."""


class EncryptionKeyMismatch(AccessDenied):
    """The customer key given is not the one the object was encrypted with."""


class MalformedPolicy(InvalidArgument):
    """A bucket policy document the engine cannot apply exactly as written."""
