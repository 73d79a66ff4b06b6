"""The one place where errors become HTTP responses (OpenAI's error bodies come from `serving.errors`)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from minimill.errors import CapacityExceeded, MinimillError
from minimill.serving.errors import describe, error_body, invalid_body

log = logging.getLogger(__name__)


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MinimillError)
    status, body = describe(exc)
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if isinstance(exc, CapacityExceeded) else None
    return JSONResponse(body, status_code=status, headers=headers)


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
