"""Puts suite items to any OpenAI-compatible endpoint (minimill by default) and records graded results.

Greedy decoding (temperature 0), a few requests in flight at once, and resumable: items already in
the result store are skipped. Transport failures and error answers are not recorded (the item runs
again next time), except 400 and 422: the endpoint's verdict on the request itself (too long for the
model, a schema it cannot follow), recorded with score 0.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

import httpx

from minimill.evals.results import ItemResult, ResultStore
from minimill.evals.suite import Item, Suite

REFUSED = (400, 422)  # statuses that judge the item's request, not the endpoint's state
BUSY_RETRIES = 30


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to send requests: the API root (".../v1") and the key, if it wants one."""

    base_url: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 300.0


@dataclass(slots=True)
class RunSummary:
    """What one `run` did: items answered now, skipped (already recorded), and failed (not recorded)."""

    answered: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def request_body(model: str, item: Item) -> dict[str, Any]:
    """The chat completions request for one item."""
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in item.messages],
                            "max_tokens": item.max_tokens, "temperature": 0, "logprobs": True}
    if item.response_format is not None:
        body["response_format"] = dict(item.response_format)
    if item.tools:
        body["tools"], body["tool_choice"] = [dict(t) for t in item.tools], "auto"
    return body


def mean_logprob(reply: Mapping[str, Any]) -> float | None:
    """Mean log-probability of the first choice's tokens (None when the model gave none, or an endpoint gave
    something unreadable)."""
    try:
        content = ((reply.get("choices") or [{}])[0].get("logprobs") or {}).get("content") or []
        values = [float(token["logprob"]) for token in content if token.get("logprob") is not None]
    except (AttributeError, TypeError, ValueError, KeyError, IndexError):
        return None
    return fmean(values) if values and all(math.isfinite(v) for v in values) else None


def answer_text(message: Mapping[str, Any]) -> str:
    """What is graded: the message's text, or its calls as a JSON list of {"name", "arguments"} (arguments
    that are not JSON kept as their text)."""
    calls = message.get("tool_calls")
    if not calls:
        return str(message.get("content") or "")
    out = []
    for call in calls:
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "null")
        except ValueError:
            arguments = function.get("arguments")
        out.append({"name": function.get("name"), "arguments": arguments})
    return json.dumps(out, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ListPrice:
    """USD per 1M tokens, for endpoints whose answers do not carry minimill's `usage.cost`."""

    input: float
    cached_input: float
    output: float

    def cost(self, prompt: int, cached: int, completion: int) -> float:
        """What a request with these token counts costs."""
        return ((prompt - cached) * self.input + cached * self.cached_input + completion * self.output) / 1e6


def graded(model: str, suite: Suite, seed: int, item: Item, reply: dict[str, Any], latency: float,
           price: ListPrice | None = None) -> ItemResult:
    """An item's result from a chat completion response. Cost: minimill's `usage.cost` (for "auto", every
    attempt's), else the token counts at `price`, else 0."""
    choices = reply.get("choices") or [{}]
    answer = answer_text(choices[0].get("message") or {})
    usage = reply.get("usage") or {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    billed = (usage.get("cost") or {}).get("total")
    routed = reply.get("router") or {}
    if routed:
        billed = routed.get("total_cost", billed)
    if billed is None:
        billed = price.cost(prompt, cached, completion) if price else 0.0
    return ItemResult(model=model, suite=suite.name, version=suite.version, seed=seed, item_id=item.id,
                      score=suite.grade(item, answer), answer=answer, prompt_tokens=prompt,
                      completion_tokens=completion, cached_tokens=cached, latency_s=latency, cost_usd=float(billed),
                      answered_by=reply.get("model"), mean_logprob=mean_logprob(reply))


async def post_politely(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    """POST a chat completion; a 429 (the endpoint is busy) is retried after its `Retry-After` (at most
    `BUSY_RETRIES` times), as a patient client would: a busy server is not a wrong answer."""
    for _ in range(BUSY_RETRIES):
        response = await client.post("/chat/completions", json=body)
        if response.status_code != 429:
            return response
        try:
            wait = float(response.headers.get("retry-after", "5"))
        except ValueError:
            wait = 5.0
        await asyncio.sleep(min(max(wait, 0.5), 60.0))
    return response


async def run(endpoint: Endpoint, models: Sequence[str], suites: Sequence[Suite], store: ResultStore, *,
              seed: int, n: int, concurrency: int = 4, prices: Mapping[str, ListPrice] | None = None,
              on_result: Callable[[ItemResult | None], None] | None = None) -> RunSummary:
    """Run `n` items of every suite against every model, recording each graded result in `store`.
    `prices` cost answers that carry no `usage.cost`; `on_result` is called once per item (None for a
    failed or skipped one): a progress bar's hook."""
    summary = RunSummary()
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    async with httpx.AsyncClient(base_url=endpoint.base_url.rstrip("/"), headers=headers,
                                 timeout=endpoint.timeout) as client:

        async def one(model: str, suite: Suite, item: Item) -> None:
            async with gate:
                started = time.monotonic()
                try:
                    response = await post_politely(client, request_body(model, item))
                except httpx.HTTPError as exc:
                    summary.failed += 1
                    summary.failures.append(f"{model} {item.id}: {type(exc).__name__}: {exc}")
                    if on_result:
                        on_result(None)
                    return
                latency = time.monotonic() - started
            if response.status_code >= 400 and response.status_code not in REFUSED:
                summary.failed += 1
                summary.failures.append(f"{model} {item.id}: HTTP {response.status_code} {response.text[:200]}")
                result = None
            elif response.status_code >= 400:
                result = ItemResult(model=model, suite=suite.name, version=suite.version, seed=seed,
                                    item_id=item.id, score=0.0, answer="", latency_s=latency,
                                    error=f"HTTP {response.status_code}: {response.text[:500]}")
            else:
                result = graded(model, suite, seed, item, response.json(), latency, (prices or {}).get(model))
            if result is not None:
                store.append(result)
                summary.answered += 1
            if on_result:
                on_result(result)

        tasks = []
        for model in models:
            for suite in suites:
                done = store.done(model, suite.name, suite.version, seed)
                for item in suite.generate(seed, n):
                    if item.id in done:
                        summary.skipped += 1
                        if on_result:
                            on_result(None)
                    else:
                        tasks.append(one(model, suite, item))
        await asyncio.gather(*tasks)
    return summary
