"""The door: what every HTTP request passes before FastAPI reads its body.

An ASGI middleware that (1) refuses a body larger than its route's limit with 413, from the
`Content-Length` header when there is one and by counting bytes as they arrive otherwise, and
(2) authenticates the bearer key from the headers alone. So an oversized or unauthenticated body is
never parsed: nothing that grows with a stranger's input runs before the key is checked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minimill.api.auth import authenticate
from minimill.errors import Unauthorized

# Routes anyone may call on a server with keys: liveness, metrics, the price book, the API's own description.
PUBLIC_PATHS = frozenset({"/health", "/metrics", "/v1/prices", "/openapi.json", "/docs", "/docs/oauth2-redirect"})


def is_console(path: str) -> bool:
    """The console's pages and assets: a page asked for without a valid key shows the login form (401) instead
    of being refused here, so the door records the tenant, or None, and lets the request through."""
    return path == "/" or path == "/console" or path.startswith("/console/")


@dataclass(frozen=True, slots=True)
class DoorLimits:
    """Body limits in bytes: uploads (`/v1/files`) may be larger than any other request."""

    max_body_bytes: int
    max_upload_bytes: int

    def for_path(self, path: str) -> int:
        """The most bytes a request body to `path` may have."""
        return self.max_upload_bytes if path.rstrip("/") == "/v1/files" else self.max_body_bytes


def _too_large(limit: int) -> str:
    return f"The request body is larger than this endpoint's limit of {limit} bytes."


def _error(status: int, message: str, type_: str, code: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


class Door:
    """ASGI middleware: body limits, then authentication, for every HTTP request."""

    def __init__(self, app: ASGIApp, *, limits: DoorLimits, keys: Sequence[str]) -> None:
        self.app = app
        self.limits = limits
        self.keys = tuple(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = self.limits.for_path(path)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(send, *_error(413, _too_large(limit), "invalid_request_error", "request_too_large"))
            return
        if path not in PUBLIC_PATHS:
            state = scope.setdefault("state", {})
            try:
                state["tenant"] = authenticate(headers.get("authorization", ""), self.keys)
            except Unauthorized as exc:
                if not is_console(path):
                    await self._refuse(send, *_error(401, exc.message, "authentication_error", "invalid_api_key"))
                    return
                state["tenant"] = None
                state["auth_error"] = exc.message if headers.get("authorization") else None
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # FastAPI passes an HTTPException raised while reading through
                    raise HTTPException(413, _too_large(limit))
            return message

        await self.app(scope, counted_receive, send)

    @staticmethod
    async def _refuse(send: Send, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
