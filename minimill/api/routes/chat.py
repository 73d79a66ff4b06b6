"""`POST /v1/chat/completions`."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response

from minimill.api import convert, proxy, routing
from minimill.api.calls import ChatCall, billed_stream
from minimill.api.deps import RuntimeDep, TenantDep
from minimill.api.generation import gather, unless_disconnected
from minimill.api.schemas import ChatCompletion, ChatCompletionRequest
from minimill.api.sse import stream_response
from minimill.engine.types import ChoiceDelta

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request, runtime: RuntimeDep,
                           tenant: TenantDep) -> ChatCompletion | Response | dict[str, Any]:
    """Chat completion, streamed or whole, by a local model, an upstream one, or the router ("auto")."""
    model = runtime.resolve(body.model)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if model == "auto":
        decided = routing.plan(body, runtime)
        if body.stream and len(decided.route.cascade) == 1:
            model = decided.route.cascade[0]  # nothing to check an answer against: stream it as it comes
        else:
            routed = await unless_disconnected(request, lambda: routing.auto_chat(body, runtime, tenant, decided))
            return Response(status_code=499) if routed is None else routed
    if model in runtime.upstreams:
        return await proxy.forward(runtime.upstreams[model], "/chat/completions", body, request, runtime, rid=rid,
                                   tenant=tenant, kind="chat.completion")
    # Templates and tokenization grow with the input: off the event loop.
    call = await asyncio.to_thread(ChatCall.prepare, body.model_copy(update={"model": model}), runtime, tenant)
    # A client that leaves while its request waits or prefills frees its place at the next engine step.
    stream = await unless_disconnected(request, lambda: billed_stream(call, runtime, rid, tenant))
    if stream is None:
        return Response(status_code=499)
    head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": call.engine.name}

    if body.stream:
        def chunk(delta: ChoiceDelta) -> dict[str, object]:
            logprobs = convert.chat_logprobs(delta.logprobs).model_dump() if body.logprobs else None
            return {**head, "choices": [{"index": delta.index, "delta": {"role": "assistant", "content": delta.text},
                                         "logprobs": logprobs, "finish_reason": delta.finish_reason}]}

        include = body.stream_options is not None and body.stream_options.include_usage
        return stream_response(stream, chunk, head, include)

    result = await unless_disconnected(request, lambda: gather(stream, call.n_choices))
    if result is None:
        return Response(status_code=499)
    return call.response(rid, created, *result)
