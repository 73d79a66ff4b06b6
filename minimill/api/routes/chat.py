"""`POST /v1/chat/completions`."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from minimill.api.deps import RuntimeDep, TenantDep
from minimill.api.disconnects import unless_disconnected
from minimill.api.forwarding import forward
from minimill.api.sse import event_stream, stream_response
from minimill.engine.types import ChoiceDelta
from minimill.serving import convert, routing
from minimill.serving.calls import ChatCall, billed_stream
from minimill.serving.generation import gather
from minimill.serving.schemas import ChatCompletion, ChatCompletionRequest
from minimill.serving.tools import CallStream

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request, runtime: RuntimeDep,
                           tenant: TenantDep) -> ChatCompletion | Response | dict[str, Any]:
    """Chat completion, streamed or whole, by a local model, an upstream one, or the router ("auto")."""
    arrived = time.monotonic()  # the request's latency, as billed, counts its preparation too
    model = runtime.resolve(body.model)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if model == "auto":
        decided = routing.plan(body, runtime)
        if body.stream and len(decided.route.cascade) == 1:
            model = decided.route.cascade[0]  # nothing to check an answer against: stream it as it comes
        else:
            routed = await unless_disconnected(request, lambda: routing.auto_chat(body, runtime, tenant, decided))
            if routed is None:
                return Response(status_code=499)
            return JSONResponse(routed) if isinstance(routed, dict) else event_stream(routed)
    if model in runtime.upstreams:
        return await forward(runtime.upstreams[model], "/chat/completions", body, request, runtime, rid=rid,
                             tenant=tenant, kind="chat.completion")
    # Templates and tokenization grow with the input: off the event loop.
    call = await asyncio.to_thread(ChatCall.prepare, body.model_copy(update={"model": model}), runtime, tenant)
    # A client that leaves while its request waits or prefills frees its place at the next engine step.
    stream = await unless_disconnected(request, lambda: billed_stream(call, runtime, rid, tenant, started=arrived))
    if stream is None:
        return Response(status_code=499)
    head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": call.engine.name,
            "system_fingerprint": call.engine.system_fingerprint}

    if body.stream:
        include = body.stream_options is not None and body.stream_options.include_usage
        names = call.tools.names if call.tools is not None else None
        chunks = ChatChunks(head, body.logprobs, names, legacy=body.functions is not None)
        return stream_response(stream, chunks, head, include)

    result = await unless_disconnected(request, lambda: gather(stream, call.n_choices))
    if result is None:
        return Response(status_code=499)
    return call.response(rid, created, *result)


class ChatChunks:
    """Turns each choice's deltas into `chat.completion.chunk` payloads. With tools, a choice's text goes
    through a `CallStream`: content as it comes, and each call, once its block is complete, as OpenAI
    streams one (a first fragment with its id and name, then its arguments), with `finish_reason:
    "tool_calls"` at the end (`legacy`: the one call as `function_call`, ending with "function_call")."""

    def __init__(self, head: dict[str, object], logprobs: bool, tools: tuple[str, ...] | None, *,
                 legacy: bool = False) -> None:
        self.head = head
        self.logprobs = logprobs
        self.legacy = legacy
        self.tools = tools or ()
        self.calls: dict[int, CallStream] | None = {} if tools is not None else None
        self.made: dict[int, int] = {}  # calls sent per choice

    def __call__(self, delta: ChoiceDelta) -> list[dict[str, object]]:
        logprobs = convert.chat_logprobs(delta.logprobs).model_dump() if self.logprobs else None
        if self.calls is None:
            return [self._chunk(delta.index, {"role": "assistant", "content": delta.text}, delta.finish_reason,
                                logprobs)]
        parser = self.calls.get(delta.index) or self.calls.setdefault(delta.index, CallStream(self.tools))
        text, calls = parser.feed(delta.text)
        if delta.finish_reason is not None:
            rest, last = parser.finish()
            text, calls = text + rest, calls + last
        out = []
        if text or logprobs:
            out.append(self._chunk(delta.index, {"role": "assistant", "content": text}, None, logprobs))
        for made in calls:
            index = self.made.get(delta.index, 0)
            self.made[delta.index] = index + 1
            if self.legacy:
                if index == 0:
                    out.append(self._chunk(delta.index, {"role": "assistant", "function_call": {
                        "name": made.name, "arguments": made.arguments}}))
                continue
            opened = {"index": index, "id": made.id, "type": "function",
                      "function": {"name": made.name, "arguments": ""}}
            out.append(self._chunk(delta.index, {"role": "assistant", "tool_calls": [opened]}))
            out.append(self._chunk(delta.index, {"tool_calls": [{"index": index,
                                                                  "function": {"arguments": made.arguments}}]}))
        if delta.finish_reason is not None:
            finish = ("function_call" if self.legacy else "tool_calls") \
                if self.made.get(delta.index) and delta.finish_reason != "length" else delta.finish_reason
            out.append(self._chunk(delta.index, {}, finish))
        return out

    def _chunk(self, index: int, delta: dict[str, object], finish: str | None = None,
               logprobs: dict[str, object] | None = None) -> dict[str, object]:
        return {**self.head, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                          "finish_reason": finish}]}
