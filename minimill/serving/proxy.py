"""Requests for an upstream model: forwarded as sent (with the upstream's model id), answered under our
model name, and billed here from the upstream's reported usage at the upstream's price-book entry."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from minimill.engine.types import Usage
from minimill.errors import MinimillError, UpstreamFailed
from minimill.router.upstream import Upstream
from minimill.runtime import Runtime
from minimill.serving.charging import latency_ms
from minimill.serving.convert import usage_out
from minimill.serving.errors import describe

log = logging.getLogger(__name__)


def _usage(raw: Any, upstream: Upstream) -> Usage:
    """Token counts from an upstream's `usage` (clamped: nothing negative, cached <= prompt); UpstreamFailed
    when they are missing or unreadable, since the request is billed from them."""
    if isinstance(raw, dict):
        details = raw.get("prompt_tokens_details")
        try:
            prompt = max(0, int(raw.get("prompt_tokens") or 0))
            completion = max(0, int(raw.get("completion_tokens") or 0))
            cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
            return Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=min(max(cached, 0), prompt))
        except (TypeError, ValueError, OverflowError):
            pass
    raise UpstreamFailed(f"upstream {upstream.name} reported no readable token usage, so the answer cannot be "
                         "billed", code="upstream_error")


async def _bill(runtime: Runtime, upstream: Upstream, *, rid: str, tenant: str, kind: str,
                usage: Usage, started: float) -> dict[str, Any]:
    cost = await asyncio.to_thread(runtime.meter.charge, request_id=rid, tenant=tenant, model=upstream.name,
                                   kind=kind, usage=usage, latency_ms=latency_ms(started))
    return usage_out(usage, cost.as_dict()).model_dump()


async def answer(upstream: Upstream, path: str, body: dict[str, Any], runtime: Runtime, *, rid: str, tenant: str,
                 kind: str) -> dict[str, Any]:
    """A whole answer from the upstream, renamed and billed (its `usage.cost` is what we charged)."""
    started = time.monotonic()
    reply = await upstream.post(path, {**body, "stream": False})
    usage = _usage(reply.get("usage"), upstream)
    billed = await _bill(runtime, upstream, rid=rid, tenant=tenant, kind=kind, usage=usage, started=started)
    reply.update(id=rid, model=upstream.name, usage=billed)
    return reply


async def stream(upstream: Upstream, path: str, body: dict[str, Any], runtime: Runtime, *, rid: str, tenant: str,
                 kind: str, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    """The upstream's stream of chunks, renamed; usage is always asked of the upstream (to bill it) and passed
    on only when the client asked. Errors before the first chunk are raised; later ones are an in-band error
    chunk."""
    started = time.monotonic()
    events = upstream.stream(path, {**body, "stream": True, "stream_options": {"include_usage": True}})
    first = await anext(events, None)  # refused, timed out or rejected: an HTTP status, not a broken stream

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        usage, created = None, int(time.time())
        pending = first
        try:
            while pending is not None:
                item, pending = pending, None
                if item.get("usage"):
                    usage = _usage(item["usage"], upstream)
                item.update(id=rid, model=upstream.name, usage=None)
                created = item.get("created", created)
                if item.get("choices"):
                    yield item
                pending = await anext(events, None)
            if usage is None:  # the answer is out already: bill what is known, and say so
                log.warning("upstream %s streamed no usage although asked to: request %s billed as 0 tokens",
                            upstream.name, rid)
            billed = await _bill(runtime, upstream, rid=rid, tenant=tenant, kind=kind, usage=usage or Usage(0, 0, 0),
                                 started=started)
            if include_usage:
                yield {"id": rid, "object": f"{kind}.chunk" if kind == "chat.completion" else kind,
                       "created": created, "model": upstream.name, "choices": [], "usage": billed}
        except MinimillError as exc:  # the 200 is out: report in-band, as OpenAI does
            yield describe(exc)[1]
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    return chunks()

