"""API keys → tenants. With no keys configured the server is open and everyone is tenant ""."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from minimill.errors import Unauthorized


def tenant_of(key: str) -> str:
    """A short stable id for an API key; the key itself is never stored or logged."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def authenticate(request: Request) -> str:
    """The caller's tenant; Unauthorized when keys are set and the bearer key is missing or wrong."""
    keys: tuple[str, ...] = request.app.state.runtime.config.server.api_keys
    if not keys:
        return ""
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                           code="invalid_api_key")
    given = given.strip()
    if not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
        raise Unauthorized("Incorrect API key provided.", code="invalid_api_key")
    return tenant_of(given)
