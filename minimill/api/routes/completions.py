"""`POST /v1/completions` (legacy text completions)."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request, Response

from minimill.api import convert
from minimill.api.charging import charged, kv_use
from minimill.api.deps import RuntimeDep, TenantDep
from minimill.api.generation import gather, start, unless_disconnected
from minimill.api.schemas import Completion, CompletionChoice, CompletionRequest
from minimill.api.sse import stream_response
from minimill.engine.types import ChoiceDelta, GenerationRequest

router = APIRouter()


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request, runtime: RuntimeDep,
                      tenant: TenantDep) -> Completion | Response:
    """Text completion of one or several prompts, streamed or whole."""
    engine = runtime.engine_for(body.model)
    prompts = convert.completion_prompts(body, engine)
    use = kv_use(runtime, body, tenant, engine.name, prompts)
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    requests = [GenerationRequest(f"{rid}-{k}", tuple(p), convert.sampling_params(
        body, engine, len(p), max_tokens=body.max_tokens, logprobs=body.logprobs, grammar=None), body.n, tenant,
        use.reuse, use.keep if k == 0 else None)
        for k, p in enumerate(prompts)]
    echoes = [engine.detokenize(p) if body.echo else "" for p in prompts]
    stream = charged(await start(engine, requests), runtime, request_id=rid, tenant=tenant, model=engine.name,
                     kind="text_completion", use=use, prompts=len(prompts))
    head = {"id": rid, "object": "text_completion", "created": created, "model": engine.name}

    if body.stream:
        echoed: set[int] = set()

        def chunk(delta: ChoiceDelta) -> dict[str, object]:
            prefix = "" if delta.index in echoed else echoes[delta.index // body.n]
            echoed.add(delta.index)
            logprobs = (convert.completion_logprobs(delta.logprobs, 0).model_dump()
                        if body.logprobs is not None else None)
            return {**head, "choices": [{"index": delta.index, "text": prefix + delta.text, "logprobs": logprobs,
                                         "finish_reason": delta.finish_reason}]}

        include = body.stream_options is not None and body.stream_options.include_usage
        return stream_response(stream, chunk, head, include)

    result = await unless_disconnected(request, lambda: gather(stream, body.n * len(prompts)))
    if result is None:
        return Response(status_code=499)
    choices, usage = result
    out = []
    for i, c in enumerate(choices):
        echo = echoes[i // body.n]
        logprobs = convert.completion_logprobs(c.logprobs, len(echo)) if body.logprobs is not None else None
        out.append(CompletionChoice(index=i, text=echo + c.text, finish_reason=c.finish_reason, logprobs=logprobs))
    return Completion(id=rid, created=created, model=engine.name, choices=out, usage=usage)
