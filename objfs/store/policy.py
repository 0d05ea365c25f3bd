"""Accounts, canned ACLs, bucket policies and public access blocks: who besides a bucket's owner may do what.

Guarantees:

* Every S3 key belongs to an account (``DEFAULT_ACCOUNT`` unless created
  with one); a bucket belongs to the account of the key that created it
  (``DEFAULT_ACCOUNT`` for buckets made before accounts, or by the mount,
  the DICOM gateway or the CLI). An account is told by its canonical id
  (:func:`canonical_id`, stable) and its name (the display name).
* :func:`bucket_denial` decides, without I/O, whether a principal may act
  on a bucket (and object) given the bucket's settings: an explicit Deny in
  the bucket policy refuses anyone but local principals (the mount, the
  gateway, system work); the owner account is otherwise allowed; another
  account or an anonymous request needs an Allow of the policy or a grant
  of a canned ACL. Lock and settings actions are the owner's alone.
* Policies use the AWS grammar for the parts people use: ``Effect``,
  ``Principal`` (``*``, account names, canonical ids,
  ``arn:aws:iam::ACCOUNT:root``), ``Action`` and ``Resource`` with ``*``
  and ``?`` wildcards, and conditions ``StringEquals`` / ``StringLike`` /
  ``StringNotLike`` on ``s3:prefix``, ``s3:object-lock-mode`` and
  ``s3:object-lock-legal-hold``,
  ``IpAddress`` / ``NotIpAddress`` on ``aws:SourceIp``, ``Bool`` on
  ``aws:SecureTransport``. Anything else is refused when the policy is put
  (:func:`parse_policy`), never silently ignored.
* An ACL is a canned name (:data:`CANNED_ACLS`) or a list of explicit
  grants (:func:`check_acl`): ``{"grantee": G, "permission": P}`` with G a
  canonical id or the group ``AllUsers`` / ``AuthenticatedUsers`` and P one
  of :data:`PERMISSIONS`. The owner account always holds FULL_CONTROL,
  whatever its ACL says. On a bucket READ lets list, WRITE put and delete
  objects; on an object READ lets get and head; READ_ACP / WRITE_ACP let
  read / change the ACL of what carries them; FULL_CONTROL is all of them.
  An object written by another account (through a bucket WRITE grant)
  belongs to that account too, for its own reads and ACL.
* A public access block ignores public ACLs and public policy grants
  (``IgnorePublicAcls`` / ``RestrictPublicBuckets``) and refuses to store
  new ones (``BlockPublicAcls`` / ``BlockPublicPolicy``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import json
import re
from typing import TYPE_CHECKING, Any

from .errors import AccessDenied, InvalidArgument, MalformedPolicy

if TYPE_CHECKING:
    from .engine import Principal

DEFAULT_ACCOUNT = "objfs"
CANNED_ACLS = ("private", "public-read", "authenticated-read", "bucket-owner-read", "bucket-owner-full-control")
PUBLIC_ACLS = ("public-read", "authenticated-read")
PERMISSIONS = ("READ", "WRITE", "READ_ACP", "WRITE_ACP", "FULL_CONTROL")
GROUPS = ("AllUsers", "AuthenticatedUsers")
BLOCK_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")

#: Engine action -> the S3 policy action that grants it. Actions not here are the owner's alone.
POLICY_ACTIONS: dict[str, str] = {
    "read": "s3:GetObject",
    "head": "s3:GetObject",
    "list": "s3:ListBucket",
    "write": "s3:PutObject",
    "copy": "s3:PutObject",
    "upload": "s3:PutObject",
    "delete": "s3:DeleteObject",
    "setattr": "s3:PutObjectTagging",
    "read-acl": "s3:GetObjectAcl",
    "write-acl": "s3:PutObjectAcl",
    "restore": "s3:RestoreObject",
}
#: The policy action of an ACL action on the bucket itself (no key).
_BUCKET_POLICY_ACTIONS = {"read-acl": "s3:GetBucketAcl", "write-acl": "s3:PutBucketAcl"}
#: Engine action -> the ACL permission that grants it, on the bucket's ACL (any key) ...
_BUCKET_PERMISSIONS = {"list": "READ", "write": "WRITE", "copy": "WRITE", "upload": "WRITE", "delete": "WRITE"}
#: ... on the bucket's ACL when no key is named, on the object's when one is.
_ACP_PERMISSIONS = {"read-acl": "READ_ACP", "write-acl": "WRITE_ACP"}
_OBJECT_PERMISSIONS = {"read": "READ", "head": "READ", **_ACP_PERMISSIONS}
_CONDITION_OPERATORS = ("StringEquals", "StringLike", "StringNotEquals", "StringNotLike", "IpAddress", "NotIpAddress", "Bool")
_CONDITION_KEYS = (
    "s3:prefix",
    "aws:sourceip",
    "aws:securetransport",
    "s3:object-lock-mode",
    "s3:object-lock-legal-hold",
)


def canonical_id(account: str) -> str:
    """The account's canonical id (64 hex digits, as S3 shows owners)."""
    return hashlib.sha256(b"objfs-account\0" + account.encode("utf-8")).hexdigest()


def owner_account(settings: dict[str, Any]) -> str:
    return settings.get("owner_account") or DEFAULT_ACCOUNT


def check_canned_acl(acl: str) -> str:
    if acl not in CANNED_ACLS:
        raise InvalidArgument(f"unsupported canned ACL {acl!r}; one of {', '.join(CANNED_ACLS)}")
    return acl


def check_acl(acl: Any) -> str | list[dict[str, str]]:
    """A canned ACL name, or explicit grants normalized (duplicates dropped); InvalidArgument if unusable."""
    if isinstance(acl, str):
        return check_canned_acl(acl)
    if not isinstance(acl, list):
        raise InvalidArgument("an ACL is a canned ACL name or a list of grants")
    grants: list[dict[str, str]] = []
    for grant in acl:
        if not isinstance(grant, dict):
            raise InvalidArgument("a grant names a grantee and a permission")
        grantee, permission = grant.get("grantee"), grant.get("permission")
        if permission not in PERMISSIONS:
            raise InvalidArgument(f"unknown permission {permission!r}; one of {', '.join(PERMISSIONS)}")
        if not isinstance(grantee, str) or (grantee not in GROUPS and not re.fullmatch(r"[0-9a-f]{64}", grantee)):
            raise InvalidArgument(f"Invalid id {grantee!r}: a grantee is a canonical id or a group")
        normalized = {"grantee": grantee, "permission": permission}
        if normalized not in grants:
            grants.append(normalized)
    return grants


def is_public_acl(acl: Any) -> bool:
    """Whether an ACL grants anything to everyone or to every signed request."""
    if isinstance(acl, list):
        return any(grant["grantee"] in GROUPS for grant in acl)
    return acl in PUBLIC_ACLS


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _principals(value: Any) -> list[str]:
    if value == "*":
        return ["*"]
    if isinstance(value, dict) and set(value) <= {"AWS", "CanonicalUser"}:
        out = []
        for item in _list(value.get("AWS", [])) + _list(value.get("CanonicalUser", [])):
            if not isinstance(item, str):
                raise MalformedPolicy("a Principal must name accounts as strings")
            match = re.fullmatch(r"arn:aws:iam::([^:]+):root", item)
            out.append(match.group(1) if match else item)
        if out:
            return out
    raise MalformedPolicy('Principal must be "*" or {"AWS": [...]} naming accounts')


def parse_policy(text: str, bucket: str) -> dict[str, Any]:
    """A bucket policy, validated (MalformedPolicy otherwise): what :func:`evaluate` applies."""
    try:
        document = json.loads(text)
    except ValueError:
        raise MalformedPolicy("Policies must be valid JSON") from None
    if not isinstance(document, dict) or "Statement" not in document:
        raise MalformedPolicy("a policy needs a Statement")
    statements = []
    for raw in _list(document["Statement"]):
        if not isinstance(raw, dict):
            raise MalformedPolicy("a Statement must be an object")
        unknown = set(raw) - {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}
        if unknown:
            raise MalformedPolicy(f"unsupported policy elements {sorted(unknown)}")
        if raw.get("Effect") not in ("Allow", "Deny"):
            raise MalformedPolicy("Effect must be Allow or Deny")
        if "Principal" not in raw or "Action" not in raw or "Resource" not in raw:
            raise MalformedPolicy("a Statement needs Principal, Action and Resource")
        actions = [a for a in _list(raw["Action"]) if isinstance(a, str)]
        if not actions or any(not (a == "*" or a.lower().startswith("s3:")) for a in actions):
            raise MalformedPolicy("Action must name s3: actions")
        resources = [r for r in _list(raw["Resource"]) if isinstance(r, str)]
        prefix = f"arn:aws:s3:::{bucket}"
        if not resources or any(r != prefix and not r.startswith(prefix + "/") for r in resources):
            raise MalformedPolicy(f"Policy has invalid resource: a Resource must be within {prefix}")
        conditions = []
        for operator, clauses in (raw.get("Condition") or {}).items():
            if operator not in _CONDITION_OPERATORS or not isinstance(clauses, dict):
                raise MalformedPolicy(f"unsupported condition operator {operator!r}")
            for name, values in clauses.items():
                if name.lower() not in _CONDITION_KEYS:
                    raise MalformedPolicy(f"unsupported condition key {name!r}")
                values = [str(v).lower() if isinstance(v, bool) else str(v) for v in _list(values)]
                if operator.endswith("IpAddress"):
                    try:
                        [ipaddress.ip_network(v, strict=False) for v in values]
                    except ValueError:
                        raise MalformedPolicy(f"invalid address in {operator}") from None
                conditions.append((operator, name.lower(), values))
        statements.append(
            {
                "effect": raw["Effect"],
                "principals": _principals(raw["Principal"]),
                "actions": actions,
                "resources": resources,
                "conditions": conditions,
            }
        )
    if not statements:
        raise MalformedPolicy("a policy needs at least one Statement")
    return {"text": text, "statements": statements}


def _holds(operator: str, actual: str | None, values: list[str]) -> bool:
    if operator == "Bool":
        return actual is not None and actual.lower() in [v.lower() for v in values]
    if operator in ("IpAddress", "NotIpAddress"):
        try:
            inside = actual is not None and any(
                ipaddress.ip_address(actual) in ipaddress.ip_network(v, strict=False) for v in values
            )
        except ValueError:
            inside = False
        return inside if operator == "IpAddress" else not inside
    if operator in ("StringEquals", "StringNotEquals"):
        found = actual is not None and actual in values
        return found if operator == "StringEquals" else not found
    found = actual is not None and any(fnmatch.fnmatchcase(actual, v) for v in values)
    return found if operator == "StringLike" else not found


def _names(principal: Principal | None) -> set[str]:
    if principal is None or principal.anonymous:
        return set()
    account = principal.account or DEFAULT_ACCOUNT
    return {account, canonical_id(account)}


def evaluate(
    policy: dict[str, Any] | None,
    principal: Principal,
    action: str,
    bucket: str,
    key: str | None,
    context: dict[str, str | None],
    *,
    public_allows: bool = True,
) -> str | None:
    """``"Deny"``, ``"Allow"`` or None (the policy says nothing) for this request."""
    if not policy or action not in POLICY_ACTIONS:
        return None
    wanted = _BUCKET_POLICY_ACTIONS[action] if key is None and action in _BUCKET_POLICY_ACTIONS else POLICY_ACTIONS[action]
    resource = f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None and action != "list" else "")
    names = _names(principal)
    verdict = None
    for statement in policy["statements"]:
        who = statement["principals"]
        if "*" not in who and not names & set(who):
            continue
        if not any(fnmatch.fnmatchcase(wanted.lower(), a.lower()) for a in statement["actions"]):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in statement["resources"]):
            continue
        if not all(_holds(op, context.get(name), values) for op, name, values in statement["conditions"]):
            continue
        if statement["effect"] == "Deny":
            return "Deny"
        if "*" in who and not public_allows and not names & set(who):
            continue
        verdict = "Allow"
    return verdict


def is_public(policy: dict[str, Any] | None) -> bool:
    """Whether the policy allows anyone at all, unrestricted by source address (S3's GetBucketPolicyStatus)."""
    for statement in (policy or {}).get("statements", []):
        if statement["effect"] == "Allow" and "*" in statement["principals"]:
            if not any(name == "aws:sourceip" and op == "IpAddress" for op, name, _ in statement["conditions"]):
                return True
    return False


def check_public_acl_allowed(settings: dict[str, Any], acl: Any) -> None:
    """BlockPublicAcls: refuse to store a public ACL (canned or by group grants) on this bucket or its objects."""
    if is_public_acl(acl) and (settings.get("public_access_block") or {}).get("BlockPublicAcls"):
        name = acl if isinstance(acl, str) else "public grants (AllUsers, AuthenticatedUsers)"
        raise AccessDenied(f"the bucket's public access block refuses the ACL with {name}")


def check_public_policy_allowed(settings: dict[str, Any], policy: dict[str, Any]) -> None:
    if is_public(policy) and (settings.get("public_access_block") or {}).get("BlockPublicPolicy"):
        raise AccessDenied("the bucket's public access block refuses a public policy")


def acl_permits(acl: Any, principal: Principal, permission: str, *, ignore_public: bool = False) -> bool:
    """Whether ``acl`` grants ``permission`` to ``principal`` (its owner's implicit FULL_CONTROL aside)."""
    if isinstance(acl, str):
        # Canned ACLs grant READ to a group; the bucket-owner-* ones only the bucket's owner, who has it anyway.
        if permission != "READ" or ignore_public:
            return False
        return acl == "public-read" or (acl == "authenticated-read" and not principal.anonymous)
    names = _names(principal)
    for grant in acl or ():
        if grant["permission"] not in (permission, "FULL_CONTROL"):
            continue
        grantee = grant["grantee"]
        if grantee == "AllUsers" or (grantee == "AuthenticatedUsers" and not principal.anonymous):
            if not ignore_public:
                return True
        elif grantee in names:
            return True
    return False


def bucket_denial(
    principal: Principal,
    action: str,
    bucket: str,
    key: str | None,
    settings: dict[str, Any],
    record: dict[str, Any] | None,
    context: dict[str, str | None],
) -> str | None:
    """Why ``principal`` may not do ``action`` on this bucket (and object), or None; see the module's guarantees."""
    if principal.is_system or (not principal.account and not principal.anonymous):
        return None  # local fronts act for the archive itself
    block = settings.get("public_access_block") or {}
    owner = owner_account(settings)
    verdict = evaluate(
        settings.get("policy"),
        principal,
        action,
        bucket,
        key,
        context,
        public_allows=not block.get("RestrictPublicBuckets"),
    )
    who = "anonymous" if principal.anonymous else f"{principal.name} (account {principal.account})"
    if verdict == "Deny":
        return f"{who} is denied {action} on {bucket} by the bucket policy"
    if not principal.anonymous and principal.account == owner:
        return None
    if verdict == "Allow":
        return None
    ignore = bool(block.get("IgnorePublicAcls"))
    if key is None and action == "head":  # HeadBucket: whoever may list it
        if acl_permits(settings.get("acl"), principal, "READ", ignore_public=ignore):
            return None
    elif key is None and action in _ACP_PERMISSIONS:
        if acl_permits(settings.get("acl"), principal, _ACP_PERMISSIONS[action], ignore_public=ignore):
            return None
    elif action in _BUCKET_PERMISSIONS:
        if acl_permits(settings.get("acl"), principal, _BUCKET_PERMISSIONS[action], ignore_public=ignore):
            return None
    elif action in _OBJECT_PERMISSIONS and record is not None:
        if not principal.anonymous and record.get("owner") == principal.account:
            return None  # the object's own writer (another account, through a bucket WRITE grant)
        if acl_permits(record.get("acl"), principal, _OBJECT_PERMISSIONS[action], ignore_public=ignore):
            return None
    return f"{who} may not {action} in bucket {bucket} of account {owner}"
