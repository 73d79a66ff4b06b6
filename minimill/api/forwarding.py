"""An online request for an upstream model over HTTP: its chunks as SSE, or its whole answer (499 when the
client left first). What forwarding means (renaming, billing) is `serving.proxy`."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from minimill.api.disconnects import unless_disconnected
from minimill.api.sse import event_stream
from minimill.router.upstream import Upstream
from minimill.runtime import Runtime
from minimill.serving import proxy
from minimill.serving.schemas import SamplingFields


async def forward(upstream: Upstream, path: str, body: SamplingFields, request: Request, runtime: Runtime, *,
                  rid: str, tenant: str, kind: str) -> Response | dict[str, Any]:
    """The upstream's answer to `body`, streamed or whole, renamed and billed."""
    payload = body.model_dump(exclude_unset=True, by_alias=True)
    if body.stream:
        include = body.stream_options is not None and body.stream_options.include_usage
        return event_stream(await proxy.stream(upstream, path, payload, runtime, rid=rid, tenant=tenant, kind=kind,
                                               include_usage=include))
    result = await unless_disconnected(request, lambda: proxy.answer(upstream, path, payload, runtime, rid=rid,
                                                                     tenant=tenant, kind=kind))
    return Response(status_code=499) if result is None else result
