"""`POST /v1/completions` (legacy text completions)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response

from minimill.api.deps import RuntimeDep, TenantDep
from minimill.api.disconnects import unless_disconnected
from minimill.api.forwarding import forward
from minimill.api.sse import stream_response
from minimill.engine.types import ChoiceDelta, TokenLogprob
from minimill.errors import InvalidRequest
from minimill.serving import convert
from minimill.serving.calls import CompletionCall, billed_stream
from minimill.serving.generation import gather
from minimill.serving.schemas import Completion, CompletionRequest

router = APIRouter()


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request, runtime: RuntimeDep,
                      tenant: TenantDep) -> Completion | Response | dict[str, Any]:
    """Text completion of one or several prompts, streamed or whole, by a local or an upstream model."""
    arrived = time.monotonic()  # the request's latency, as billed, counts its preparation too
    model = runtime.resolve(body.model)
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    if model == "auto":
        raise InvalidRequest("model 'auto' routes chat completions only: name a model for /v1/completions",
                             param="model", code="model_not_supported")
    if model in runtime.upstreams:
        return await forward(runtime.upstreams[model], "/completions", body, request, runtime, rid=rid,
                             tenant=tenant, kind="text_completion")
    # Templates and tokenization grow with the input: off the event loop.
    call = await asyncio.to_thread(CompletionCall.prepare, body.model_copy(update={"model": model}), runtime, tenant)
    # A client that leaves while its request waits or prefills frees its place at the next engine step.
    stream = await unless_disconnected(request, lambda: billed_stream(call, runtime, rid, tenant, started=arrived))
    if stream is None:
        return Response(status_code=499)
    head = {"id": rid, "object": "text_completion", "created": created, "model": call.engine.name,
            "system_fingerprint": call.engine.system_fingerprint}

    if body.stream:
        echoed: set[int] = set()
        scores: dict[int, tuple[TokenLogprob, ...]] = {}

        def chunk(delta: ChoiceDelta) -> list[dict[str, object]]:
            first, k = delta.index not in echoed, delta.index // body.n
            prefix = call.echoes[k] if first else ""
            echoed.add(delta.index)
            if delta.prompt_logprobs:  # the prompt's first choice carries them: its siblings reuse them
                scores[k] = delta.prompt_logprobs
            scored = first and body.echo and body.logprobs is not None  # the prompt's scores lead its first chunk
            logprobs = (convert.completion_logprobs(
                delta.logprobs, 0, first_prompt_token=call.first_tokens[k] if scored else None,
                prompt=scores.get(k, ()) if scored else ()).model_dump() if body.logprobs is not None else None)
            return [{**head, "choices": [{"index": delta.index, "text": prefix + delta.text, "logprobs": logprobs,
                                          "finish_reason": delta.finish_reason}]}]

        include = body.stream_options is not None and body.stream_options.include_usage
        return stream_response(stream, chunk, head, include)

    result = await unless_disconnected(request, lambda: gather(stream, call.n_choices))
    if result is None:
        return Response(status_code=499)
    return call.response(rid, created, *result)
