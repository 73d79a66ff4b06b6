"""Server-sent events in OpenAI's format: `data: {json}` per chunk, then `data: [DONE]`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from minimill.engine.types import ChoiceDelta
from minimill.errors import MinimillError
from minimill.serving.errors import describe
from minimill.serving.schemas import UsageOut

log = logging.getLogger(__name__)


def event(payload: object) -> str:
    """One SSE event."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _events(payloads: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    try:
        async for payload in payloads:
            yield event(payload)
    finally:  # the client gone: closing the payloads aborts what produces them
        await payloads.aclose()  # type: ignore[attr-defined]
    yield "data: [DONE]\n\n"


def event_stream(payloads: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    """A streaming HTTP response of chunk payloads, closed by `[DONE]` (no caching, no proxy buffering)."""
    return StreamingResponse(_events(payloads), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def stream_response(items: AsyncIterator[ChoiceDelta | UsageOut],
                    chunks: Callable[[ChoiceDelta], list[dict[str, object]]],
                    head: dict[str, object], include_usage: bool) -> StreamingResponse:
    """Stream deltas as chunks (`head` + choices; a delta may make several, or none); a usage chunk with
    empty choices when asked for.

    Closing the response (client gone) closes `items`, which aborts the engine requests.
    """

    async def body() -> AsyncIterator[dict[str, Any]]:
        try:
            async for item in items:
                if isinstance(item, UsageOut):
                    if include_usage:
                        yield {**head, "choices": [], "usage": item.model_dump()}
                else:
                    for payload in chunks(item):
                        yield payload
        except MinimillError as exc:  # the 200 has been sent: report in-band, as OpenAI does
            yield describe(exc)[1]
        finally:
            await items.aclose()  # type: ignore[attr-defined]

    return event_stream(body())
