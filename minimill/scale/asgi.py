"""One HTTP request carried to a replica as plain data and played through the replica's ASGI app in its own
process, its response coming back as a head and then body chunks as they are sent (so streams stream).
No Ray here: the deployments move these objects, this module only builds and plays them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message

from minimill.scale.affinity import RoutingKeys, prompt_text


@dataclass(frozen=True, slots=True)
class Forwarded:
    """An HTTP request as the ingress read it (its whole body: bodies are bounded), with its routing keys."""

    method: str
    path: str
    query: bytes
    headers: tuple[tuple[str, str], ...]
    body: bytes
    client: tuple[str, int] | None
    keys: RoutingKeys

    @property
    def prompt(self) -> str:
        """The prompt's text (what Ray Serve LLM's prefix router matches on; never empty, as it divides by it)."""
        try:
            body = json.loads(self.body)
        except (ValueError, RecursionError):
            return " "
        return (prompt_text(body) if isinstance(body, dict) else "") or " "


@dataclass(frozen=True, slots=True)
class Head:
    """The status and headers of a response, the first thing a replica yields; `replica` names the replica."""

    status: int
    headers: tuple[tuple[str, str], ...]
    replica: str


async def play(app: ASGIApp, request: Forwarded, replica: str) -> AsyncIterator[Head | bytes]:
    """Run `request` through `app`: yields the Head, then each non-empty body chunk. Closing the iterator early
    (the client left) tells the app the client disconnected and waits for it to finish."""
    sent: asyncio.Queue[Message | None] = asyncio.Queue()
    gone = asyncio.Event()
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        await sent.put(message)

    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": request.method, "scheme": "http", "path": request.path, "raw_path": request.path.encode(),
        "root_path": "", "query_string": request.query, "client": request.client, "server": ("127.0.0.1", 0),
        "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in request.headers],
        "state": {},
    }
    task = asyncio.ensure_future(app(scope, receive, send))
    task.add_done_callback(lambda _: sent.put_nowait(None))
    try:
        while (message := await sent.get()) is not None:
            if message["type"] == "http.response.start":
                headers = tuple((name.decode("latin-1"), value.decode("latin-1"))
                                for name, value in message.get("headers", ()))
                yield Head(message["status"], (*headers, ("x-minimill-replica", replica)), replica)
            elif message["type"] == "http.response.body":
                if body := message.get("body", b""):
                    yield bytes(body)
                if not message.get("more_body", False):
                    break
    finally:
        gone.set()
        # The app answers its own errors (a 500 in OpenAI's shape); what it raises after that is logged by it.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
