"""Server-sent events in OpenAI's format: `data: {json}` per chunk, then `data: [DONE]`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

from fastapi.responses import StreamingResponse

from minimill.api.errors import describe
from minimill.api.schemas import UsageOut
from minimill.engine.types import ChoiceDelta
from minimill.errors import MinimillError

log = logging.getLogger(__name__)


def event(payload: object) -> str:
    """One SSE event."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    """A streaming HTTP response of already formatted events (no caching, no proxy buffering)."""
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def stream_response(items: AsyncIterator[ChoiceDelta | UsageOut],
                    chunks: Callable[[ChoiceDelta], list[dict[str, object]]],
                    head: dict[str, object], include_usage: bool) -> StreamingResponse:
    """Stream deltas as chunks (`head` + choices; a delta may make several, or none); a usage chunk with
    empty choices when asked for.

    Closing the response (client gone) closes `items`, which aborts the engine requests.
    """

    async def body() -> AsyncIterator[str]:
        try:
            async for item in items:
                if isinstance(item, UsageOut):
                    if include_usage:
                        yield event({**head, "choices": [], "usage": item.model_dump()})
                else:
                    for payload in chunks(item):
                        yield event(payload)
        except MinimillError as exc:  # the 200 has been sent: report in-band, as OpenAI does
            yield event(describe(exc)[1])
        finally:
            await items.aclose()  # type: ignore[attr-defined]
        yield "data: [DONE]\n\n"

    return event_stream(body())
