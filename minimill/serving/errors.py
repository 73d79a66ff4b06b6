"""OpenAI's error shape for domain errors: `{"error": {message, type, param, code}}` and the HTTP status it
goes with. No HTTP here: batch output lines and in-band stream errors carry the same status and body."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minimill.errors import (
    CapacityExceeded,
    EngineUnavailable,
    InsufficientStorage,
    InvalidRequest,
    LedgerUnavailable,
    MinimillError,
    NotFound,
    PermissionDenied,
    Unauthorized,
    UpstreamFailed,
    UpstreamTimeout,
)

# exception class -> (HTTP status, OpenAI error type)
STATUS: dict[type[MinimillError], tuple[int, str]] = {
    InvalidRequest: (400, "invalid_request_error"),
    Unauthorized: (401, "authentication_error"),
    PermissionDenied: (403, "permission_error"),
    NotFound: (404, "not_found_error"),
    CapacityExceeded: (429, "rate_limit_exceeded"),
    InsufficientStorage: (507, "server_error"),
    EngineUnavailable: (503, "server_error"),
    LedgerUnavailable: (503, "server_error"),
    UpstreamTimeout: (504, "server_error"),  # before UpstreamFailed: the first match wins
    UpstreamFailed: (502, "server_error"),
}


def _encodable(text: str | None) -> str | None:
    """`text` as UTF-8 can carry it: a lone surrogate (JSON's "\\ud800" parses into one, and messages quote what
    the client sent) becomes its backslash escape instead of failing the response."""
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, object]:
    """The OpenAI error object."""
    return {"error": {"message": _encodable(message), "type": type_, "param": _encodable(param),
                      "code": _encodable(code)}}


def describe(exc: MinimillError) -> tuple[int, dict[str, object]]:
    """Status and body for a domain error."""
    status, type_ = next(v for k, v in STATUS.items() if isinstance(exc, k))
    return status, error_body(exc.message, type_, exc.param, exc.code)


def _param_of(loc: tuple[object, ...]) -> str | None:
    # loc looks like ("body", "messages", 0, "content") or ("query", "limit"); OpenAI names the field's path.
    parts = [str(p) for p in loc[1:] if not isinstance(p, int)] if loc and loc[0] in ("body", "query", "path") else []
    return ".".join(parts[:2]) or None


def invalid_body(errors: Sequence[Any], loc_prefix: tuple[object, ...] = ()) -> InvalidRequest:
    """The first of pydantic's errors about a request body, as OpenAI words it (naming the field)."""
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    param = _param_of((*loc_prefix, *first.get("loc", ())))
    message = f"Invalid value for '{param}': {first['msg']}" if param else str(first["msg"])
    return InvalidRequest(message, param=param)
