"""Work for an HTTP request that stops when its client goes away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from starlette.requests import Request

T = TypeVar("T")
DISCONNECT_POLL_SECONDS = 0.25


async def unless_disconnected(request: Request, work: Callable[[], Coroutine[Any, Any, T]]) -> T | None:
    """Run `work`; if the client goes away first, cancel it (freeing its KV) and return None."""
    task = asyncio.create_task(work())

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL_SECONDS)

    watcher = asyncio.create_task(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None
