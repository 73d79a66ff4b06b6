"""The one place where errors become HTTP: OpenAI's `{"error": {message, type, param, code}}`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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

log = logging.getLogger(__name__)

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


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MinimillError)
    status, body = describe(exc)
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if isinstance(exc, CapacityExceeded) else None
    return JSONResponse(body, status_code=status, headers=headers)


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


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if exc.errors() and exc.errors()[0].get("type") == "json_invalid":
        return JSONResponse(error_body("We could not parse the JSON body of your request.",
                                       "invalid_request_error"), status_code=400)
    status, body = describe(invalid_body(exc.errors()))
    return JSONResponse(body, status_code=status)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(error_body(message, type_), status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("The server had an error while processing your request.", "server_error"),
                        status_code=500)


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(MinimillError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
