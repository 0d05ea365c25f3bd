"""Who is asking: HTTP Basic (access key : secret key) or a bearer token (the secret key), over the store's keys.

Guarantees:

* Every request but a CORS preflight is authenticated; a request without
  valid credentials is answered 401 with a ``WWW-Authenticate`` challenge.
* Secrets are compared in constant time; the keys file is re-read by the
  engine's key ring when it changes, so a key created while the front runs
  works at once.
* This module decides nothing about rights: :func:`principal_of` hands the
  key's rights (read-only, bucket scope) to the engine, and
  :func:`authorize` asks the engine (``Store.authorize``), which records a
  refusal as a durable ``denied`` audit line naming the key.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from objfs.store import AccessKey, Principal, Store

from .engine import Engine, HTTPError

CHALLENGE = {"WWW-Authenticate": 'Basic realm="objfs DICOMweb", charset="UTF-8"'}


def principal_of(key: AccessKey) -> Principal:
    """The engine's principal for a key: ``dicomweb:<key name>``, the key's account and every right it holds."""
    return Principal.of_key(key, "dicomweb")


def key_for(store: Store, authorization: str | None) -> AccessKey:
    """The key an ``Authorization`` header proves; raises HTTPError 401 (blocking: reads the keys file)."""
    if not authorization:
        raise HTTPError(401, "credentials required (HTTP Basic with an objfs access key, or Bearer)", CHALLENGE)
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            access, sep, secret = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise HTTPError(401, "malformed Basic credentials", CHALLENGE) from None
        key = store.access_key(access) if sep else None
        if key is not None and hmac.compare_digest(key.secret_key.encode(), secret.encode()):
            return key
    elif scheme == "bearer" and value:
        found = None
        for key in store.keys.all():  # no early exit: the time taken does not tell which key is close
            if hmac.compare_digest(key.secret_key.encode(), value.encode()):
                found = key
        if found is not None:
            return found
    raise HTTPError(401, "invalid credentials", CHALLENGE)


async def authenticate(engine: Engine, authorization: str | None) -> Principal:
    """The principal of a request (the keys file is read off the event loop)."""
    key = await engine.run(key_for, engine.store, authorization)
    return principal_of(key)


async def authorize(engine: Engine, principal: Principal, action: str) -> None:
    """Ask the engine whether ``principal`` may ``action`` ("read", "write") the served bucket; 403 if not."""
    store = engine.store
    if store.access_denial(principal, action, engine.bucket) is not None:
        await engine.run(store.authorize, principal, action, engine.bucket)
