"""Who may do what: the one table of engine actions and the rights they need.

Guarantees:

* Every action an engine method performs for a principal is named here and
  maps to exactly one right (:data:`REQUIRED`); reading needs no right
  beyond the bucket scope. An action missing from the table is refused, so
  a new engine method cannot silently go unchecked.
* Lock arguments of a write (``retention``, ``legal_hold``) need their own
  rights on top of the write (:data:`LOCK_ARGUMENTS`), so a writer cannot
  lock what it may not lock by putting a new version.
* The decision is :func:`denial`: pure, no I/O, so a front may ask before it
  reads a request body. The engine's ``audited`` decorator applies it to
  every audited method and ``Store.authorize`` to a front's request; both
  record a refusal as a durable ``denied`` audit line naming the principal.
* A principal of None (an internal call) is not checked: the engine calls
  itself, and maintenance runs as a system principal holding every right.
* This table is about a key's own rights; whose bucket it is, and what its
  policy and ACLs grant other accounts and anonymous requests, is
  :mod:`.policy`'s (``Store.access_denial`` asks both).

Rights a key may hold (``objfs key create``): ``write`` (every key but a
read-only one), ``legal-hold`` (place or lift a legal hold),
``retention`` (set or extend a version's retention, lock headers on writes,
the bucket's default retention), ``bypass-governance`` (shorten, remove or
harden GOVERNANCE retention, asked for per request), ``replication`` (write
replicas that keep another appliance's version ids, :mod:`.replicas`). COMPLIANCE retention
can only be extended, by anyone holding ``retention``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Principal

READ = "read"
WRITE = "write"
LEGAL_HOLD = "legal-hold"
RETENTION = "retention"
BYPASS_GOVERNANCE = "bypass-governance"
REPLICATION = "replication"

#: Rights granted per key, beyond reading.
RIGHTS = (WRITE, LEGAL_HOLD, RETENTION, BYPASS_GOVERNANCE, REPLICATION)

#: Engine action -> the right it needs. The action names are the audit log's.
REQUIRED: dict[str, str] = {
    "read": READ,
    "list": READ,
    "head": READ,
    "write": WRITE,
    "copy": WRITE,
    "delete": WRITE,
    "rename": WRITE,
    "link": WRITE,
    "setattr": WRITE,
    "setxattr": WRITE,
    "truncate": WRITE,
    "upload": WRITE,
    "create-bucket": WRITE,
    "delete-bucket": WRITE,
    "bucket-settings": WRITE,
    "transition": WRITE,
    "restore": WRITE,
    "retention": RETENTION,
    "lock-config": RETENTION,
    "legal-hold": LEGAL_HOLD,
    "read-acl": READ,
    "write-acl": WRITE,
    "replicate": REPLICATION,
}

#: Keyword arguments of a write that lock the new version, and the right each needs when true.
LOCK_ARGUMENTS: dict[str, str] = {"retention": RETENTION, "legal_hold": LEGAL_HOLD}


def rights_for(action: str, arguments: dict[str, Any] | None = None) -> list[str]:
    """The rights ``action`` needs, with ``arguments`` the call's keyword arguments."""
    rights = [REQUIRED[action]]
    for name, right in LOCK_ARGUMENTS.items():
        if arguments and arguments.get(name):
            rights.append(right)
    return rights


def denial(principal: Principal, action: str, bucket: str | None, arguments: dict[str, Any] | None = None) -> str | None:
    """Why ``principal`` may not do ``action`` on ``bucket`` (None: it may).

    ``bucket`` None is the service level (listing buckets), which every
    principal may read; what it then sees is filtered by :func:`sees`.
    """
    if action not in REQUIRED:
        return f"{principal.name} may not {action}: the engine knows no such action"
    if bucket is not None and not sees(principal, bucket):
        return f"{principal.name} may not access bucket {bucket}"
    for right in rights_for(action, arguments):
        if right != READ and not principal.holds(right):
            return f"{principal.name} lacks the {right} right ({action} needs it)"
    return None


def sees(principal: Principal, bucket: str) -> bool:
    """Whether ``bucket`` is in ``principal``'s scope (ListBuckets shows only those)."""
    return not principal.buckets or bucket in principal.buckets
