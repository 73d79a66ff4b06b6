"""Domain exceptions. Layers raise these; only `api/errors.py` turns them into HTTP."""

from __future__ import annotations


class MinimillError(Exception):
    """Base of every error minimill raises on purpose.

    `param` names the request field at fault (OpenAI's `error.param`), `code` a short machine code.
    """

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(MinimillError):
    """The request is malformed or asks for something impossible (HTTP 400)."""


class ContextOverflow(InvalidRequest):
    """Prompt plus requested output do not fit the model's context (HTTP 400)."""


class NotFound(MinimillError):
    """An unknown model, cache or object (HTTP 404)."""


class Unauthorized(MinimillError):
    """Missing or wrong API key (HTTP 401)."""


class PermissionDenied(MinimillError):
    """The key is valid but may not do this (HTTP 403)."""


class CapacityExceeded(MinimillError):
    """The waiting queue is full; retry after `retry_after` seconds (HTTP 429)."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message, code="queue_full")
        self.retry_after = retry_after


class LedgerUnavailable(MinimillError):
    """The ledger database could not record a bill; the request is not answered unbilled (HTTP 503)."""


class InsufficientStorage(MinimillError):
    """The server has no room to store what was sent (a full disk); nothing was kept (HTTP 507)."""


class EngineUnavailable(MinimillError):
    """The engine failed or is shutting down; the request did not finish (HTTP 503)."""


class UpstreamFailed(MinimillError):
    """An upstream endpoint failed, broke off, or answered with an error that is not the caller's (HTTP 502)."""


class UpstreamTimeout(UpstreamFailed):
    """An upstream endpoint did not answer in time (HTTP 504)."""
