"""`model: "auto"`: the router's cascade run for one chat request. The cheapest model expected to pass
answers first; the check (response_format, the user's grader, the model's confidence) decides whether the
next model of the cascade is asked (it is also asked when a model cannot take the request: too long for
it, or its upstream failed). Every attempt is billed (its own ledger entry) and listed in the
response's `router` field; `model` is the one that answered."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from minimill.errors import CapacityExceeded, ContextOverflow, InvalidRequest, MinimillError, UpstreamFailed
from minimill.evals.runner import mean_logprob
from minimill.evals.suites import ALL as SUITES
from minimill.router.checks import Verdict, check, validate_grader
from minimill.router.features import detect_task
from minimill.router.policy import Route
from minimill.runtime import Runtime
from minimill.serving import proxy
from minimill.serving.calls import ChatCall, billed_stream
from minimill.serving.generation import gather
from minimill.serving.schemas import ChatCompletionRequest


async def attempt(model: str, body: ChatCompletionRequest, runtime: Runtime, *, rid: str,
                  tenant: str) -> dict[str, Any]:
    """One whole, billed chat answer from a local or upstream model, with token log-probabilities."""
    asked = body.model_copy(update={"model": model, "stream": False, "logprobs": True})
    if model in runtime.upstreams:
        payload = {**asked.model_dump(exclude_unset=True, by_alias=True), "logprobs": True}
        payload.pop("stream_options", None)  # not allowed on a request that does not stream
        return await proxy.answer(runtime.upstreams[model], "/chat/completions", payload, runtime, rid=rid,
                                  tenant=tenant, kind="chat.completion")
    call = await asyncio.to_thread(ChatCall.prepare, asked, runtime, tenant)
    stream = await billed_stream(call, runtime, rid, tenant)
    choices, usage = await gather(stream, call.n_choices)
    return call.response(rid, int(time.time()), choices, usage).model_dump()


def _answer_text(reply: dict[str, Any]) -> str:
    choices = reply.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    return str(message.get("content") or "") if isinstance(message, dict) else ""


@dataclass(frozen=True, slots=True)
class AutoPlan:
    """What the router decided for one request, and how each answer will be checked."""

    route: Route
    grader: str | None
    min_confidence: float
    response_format: dict[str, Any] | None


def plan(body: ChatCompletionRequest, runtime: Runtime) -> AutoPlan:
    """Detect the task, look up its route, and read the checks from `metadata` (400 on bad values)."""
    metadata = body.metadata or {}
    text = "\n".join(message.text() for message in body.messages)
    response_format = body.response_format.model_dump(by_alias=True) if body.response_format else None
    task = detect_task(text, metadata=metadata, response_format=response_format, suites=SUITES,
                       tools=bool(body.tools or body.functions))
    grader = metadata.get("grader")
    validate_grader(grader)
    route = runtime.router.route(task)
    tuned = route.min_confidence if route.min_confidence is not None else runtime.config.routing.min_confidence
    try:
        min_confidence = float(metadata.get("min_confidence", tuned))
        if not math.isfinite(min_confidence):
            raise ValueError(min_confidence)
    except ValueError:
        raise InvalidRequest("metadata.min_confidence must be a number (a mean log-probability, e.g. -1.0)",
                             param="metadata") from None
    return AutoPlan(route, grader, min_confidence, response_format)


async def auto_chat(body: ChatCompletionRequest, runtime: Runtime, tenant: str,
                    decided: AutoPlan) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
    """Run the cascade; the answer carries `router: {task, reason, attempts, total_cost}`. A streamed
    request gets the chosen answer as chunks of one content delta each: it is only known to pass once it is
    whole (the chat route streams a one-model route token by token instead)."""
    route, response_format = decided.route, decided.response_format
    task, grader, min_confidence = route.task, decided.grader, decided.min_confidence
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    attempts: list[dict[str, Any]] = []
    reply: dict[str, Any] | None = None
    failure: MinimillError | None = None
    for k, model in enumerate(route.cascade):
        try:
            candidate = await attempt(model, body, runtime, rid=f"{rid}-{k}", tenant=tenant)
        except (ContextOverflow, UpstreamFailed, CapacityExceeded, InvalidRequest) as exc:
            # too long for this model, its queue full, or its upstream down or refusing: the next may take it
            if isinstance(exc, InvalidRequest) and not isinstance(exc, ContextOverflow) \
                    and exc.code != "upstream_invalid_request":
                raise
            failure = exc
            attempts.append({"model": model, "id": None, "usage": None, "cost": 0.0, "mean_logprob": None,
                             "passed": False, "reason": f"skipped: {exc.message}"})
            continue
        reply = candidate
        confidence = mean_logprob(reply)
        verdict = (Verdict(True, "last model of the cascade") if k == len(route.cascade) - 1 else
                   await asyncio.to_thread(check, _answer_text(reply), response_format=response_format,
                                           mean_logprob=confidence, min_confidence=min_confidence, grader=grader))
        attempts.append({"model": model, "id": f"{rid}-{k}", "usage": reply["usage"],
                         "cost": reply["usage"]["cost"]["total"], "mean_logprob": confidence,
                         "passed": verdict.passed, "reason": verdict.reason})
        if verdict.passed:
            break
    if reply is None:  # no model of the cascade could answer
        assert failure is not None
        raise failure
    if not body.logprobs:
        for choice in reply["choices"]:
            if isinstance(choice, dict):
                choice["logprobs"] = None
    reply.update(id=rid, router={"task": task, "reason": route.reason, "cascade": list(route.cascade),
                                 "attempts": attempts, "total_cost": sum(a["cost"] for a in attempts)})
    return _as_stream(reply, body) if body.stream else reply


async def _as_stream(reply: dict[str, Any], body: ChatCompletionRequest) -> AsyncIterator[dict[str, Any]]:
    head = {"id": reply["id"], "object": "chat.completion.chunk", "created": reply.get("created", int(time.time())),
            "model": reply["model"], "system_fingerprint": reply.get("system_fingerprint")}
    for index, choice in enumerate(reply["choices"]):
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        yield {**head, "choices": [{"index": index, "delta": delta, "logprobs": choice.get("logprobs"),
                                    "finish_reason": choice.get("finish_reason")}]}
    if body.stream_options is not None and body.stream_options.include_usage:
        yield {**head, "choices": [], "usage": reply["usage"], "router": reply["router"]}
