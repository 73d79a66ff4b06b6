"""API keys → tenants. With no keys configured the server is open and everyone is tenant "".

The key is checked from the headers alone, by the door (`api/door.py`), before any body is read;
routes read the tenant it found through `request_tenant`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from fastapi import Request

from minimill.errors import Unauthorized


def tenant_of(key: str) -> str:
    """A short stable id for an API key; the key itself is never stored or logged."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def bearer_key(authorization: str) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, or None."""
    scheme, _, given = authorization.partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def key_in(authorization: str, keys: Sequence[str]) -> bool:
    """Whether the header's bearer key is one of `keys` (compared in constant time)."""
    given = bearer_key(authorization)
    return given is not None and any(hmac.compare_digest(given.encode(), k.encode()) for k in keys)


def authenticate(authorization: str, keys: Sequence[str]) -> str:
    """The caller's tenant ("" on an open server); Unauthorized when keys are set and the bearer key is
    missing or not one of them."""
    if not keys:
        return ""
    given = bearer_key(authorization)
    if given is None:
        raise Unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                           code="invalid_api_key")
    if not key_in(authorization, keys):
        raise Unauthorized("Incorrect API key provided.", code="invalid_api_key")
    return tenant_of(given)


def request_tenant(request: Request) -> str:
    """The tenant the door found for this request (a route outside the door's checks authenticates here)."""
    tenant = getattr(request.state, "tenant", None)
    if tenant is None:
        keys: tuple[str, ...] = request.app.state.runtime.config.server.api_keys
        tenant = authenticate(request.headers.get("authorization", ""), keys)
    return str(tenant)
