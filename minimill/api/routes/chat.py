"""`POST /v1/chat/completions`."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request, Response

from minimill.api import convert
from minimill.api.charging import charged, kv_use
from minimill.api.deps import RuntimeDep, TenantDep
from minimill.api.generation import gather, start, unless_disconnected
from minimill.api.schemas import ChatChoice, ChatCompletion, ChatCompletionRequest, ChatMessageOut
from minimill.api.sse import stream_response
from minimill.engine.types import ChoiceDelta, GenerationRequest
from minimill.errors import InvalidRequest

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request, runtime: RuntimeDep,
                           tenant: TenantDep) -> ChatCompletion | Response:
    """Chat completion, streamed or whole."""
    engine = runtime.engine_for(body.model)
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequest("top_logprobs requires logprobs to be true", param="top_logprobs")
    prompt = engine.chat_tokens(convert.chat_messages(body))
    use = kv_use(runtime, body, tenant, engine.name, [prompt])
    params = convert.sampling_params(
        body, engine, len(prompt), max_tokens=body.max_completion_tokens or body.max_tokens,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None, grammar=convert.chat_grammar(body, engine))
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    started = await start(engine, [GenerationRequest(rid, tuple(prompt), params, body.n, tenant, use.reuse, use.keep)])
    stream = charged(started, runtime, request_id=rid, tenant=tenant, model=engine.name, kind="chat.completion",
                     use=use, prompts=1)
    head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": engine.name}

    if body.stream:
        def chunk(delta: ChoiceDelta) -> dict[str, object]:
            logprobs = convert.chat_logprobs(delta.logprobs).model_dump() if body.logprobs else None
            return {**head, "choices": [{"index": delta.index, "delta": {"role": "assistant", "content": delta.text},
                                         "logprobs": logprobs, "finish_reason": delta.finish_reason}]}

        include = body.stream_options is not None and body.stream_options.include_usage
        return stream_response(stream, chunk, head, include)

    result = await unless_disconnected(request, lambda: gather(stream, body.n))
    if result is None:
        return Response(status_code=499)
    choices, usage = result
    return ChatCompletion(id=rid, created=created, model=engine.name, usage=usage, choices=[
        ChatChoice(index=i, message=ChatMessageOut(content=c.text), finish_reason=c.finish_reason,
                   logprobs=convert.chat_logprobs(c.logprobs) if body.logprobs else None)
        for i, c in enumerate(choices)])
