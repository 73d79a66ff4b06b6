"""`POST /v1/completions` (legacy text completions)."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request, Response

from minimill.api import convert
from minimill.api.calls import CompletionCall
from minimill.api.charging import charged
from minimill.api.deps import RuntimeDep, TenantDep
from minimill.api.generation import gather, start, unless_disconnected
from minimill.api.schemas import Completion, CompletionRequest
from minimill.api.sse import stream_response
from minimill.engine.types import ChoiceDelta

router = APIRouter()


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request, runtime: RuntimeDep,
                      tenant: TenantDep) -> Completion | Response:
    """Text completion of one or several prompts, streamed or whole."""
    call = CompletionCall.prepare(body, runtime, tenant)
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    stream = charged(await start(call.engine, call.requests(rid, tenant)), runtime, request_id=rid, tenant=tenant,
                     model=call.engine.name, kind=call.kind, use=call.use, prompts=len(call.prompts))
    head = {"id": rid, "object": "text_completion", "created": created, "model": call.engine.name}

    if body.stream:
        echoed: set[int] = set()

        def chunk(delta: ChoiceDelta) -> dict[str, object]:
            prefix = "" if delta.index in echoed else call.echoes[delta.index // body.n]
            echoed.add(delta.index)
            logprobs = (convert.completion_logprobs(delta.logprobs, 0).model_dump()
                        if body.logprobs is not None else None)
            return {**head, "choices": [{"index": delta.index, "text": prefix + delta.text, "logprobs": logprobs,
                                         "finish_reason": delta.finish_reason}]}

        include = body.stream_options is not None and body.stream_options.include_usage
        return stream_response(stream, chunk, head, include)

    result = await unless_disconnected(request, lambda: gather(stream, call.n_choices))
    if result is None:
        return Response(status_code=499)
    return call.response(rid, created, *result)
