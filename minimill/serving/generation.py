"""Running one request's engine generations: errors before any answer starts, merging, gathering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from minimill.engine.client import EngineClient
from minimill.engine.types import ChoiceDelta, GenerationRequest, TokenLogprob, Usage
from minimill.serving.convert import add_usage
from minimill.serving.schemas import UsageOut

U = TypeVar("U", Usage, UsageOut)


@dataclass(slots=True)
class ChoiceText:
    """A finished choice, gathered from its deltas."""

    text: str = ""
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)  # when the request scored its prompt


async def start(engine: EngineClient, requests: Sequence[GenerationRequest]) -> AsyncIterator[ChoiceDelta | Usage]:
    """Start every request and pull each one's first item, so queue-full or context errors surface
    as HTTP statuses before any response starts. Returns one merged stream: choice indexes of
    request k are offset by k*n, and a single summed Usage comes last."""
    streams = [engine.generate(request) for request in requests]
    firsts = await asyncio.gather(*(anext(stream) for stream in streams), return_exceptions=True)
    failure = next((f for f in firsts if isinstance(f, BaseException)), None)
    if failure is not None:
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
        raise failure
    primed = [(first, stream) for first, stream in zip(firsts, streams, strict=True)]
    return _merge(primed, [request.n for request in requests])  # type: ignore[arg-type]


async def _merge(primed: list[tuple[ChoiceDelta | Usage, AsyncIterator[ChoiceDelta | Usage]]],
                 counts: list[int]) -> AsyncIterator[ChoiceDelta | Usage]:
    if len(primed) == 1:  # the common case: no pump task, one hop less per token
        first, stream = primed[0]
        try:
            yield first
            async for delta in stream:
                yield delta
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        return
    queue: asyncio.Queue[tuple[int, ChoiceDelta | Usage | BaseException]] = asyncio.Queue()

    async def pump(k: int, first: ChoiceDelta | Usage, stream: AsyncIterator[ChoiceDelta | Usage]) -> None:
        try:
            await queue.put((k, first))
            async for item in stream:
                await queue.put((k, item))
        except Exception as exc:  # handed to the consumer, which re-raises it
            await queue.put((k, exc))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    tasks = [asyncio.create_task(pump(k, first, stream)) for k, (first, stream) in enumerate(primed)]
    offsets = [sum(counts[:k]) for k in range(len(counts))]
    total = Usage(0, 0, 0)
    try:
        remaining = len(tasks)
        while remaining:
            k, item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Usage):
                total = add_usage(total, item)
                remaining -= 1
            else:
                yield replace(item, index=item.index + offsets[k])
        yield total
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def gather(stream: AsyncIterator[ChoiceDelta | U], n_choices: int) -> tuple[list[ChoiceText], U]:
    """Consume a stream into whole choices and its closing usage (billed, or the engine's)."""
    choices = [ChoiceText() for _ in range(n_choices)]
    usage: U | None = None
    async for item in stream:
        if not isinstance(item, ChoiceDelta):
            usage = item
            continue
        choice = choices[item.index]
        choice.text += item.text
        choice.logprobs.extend(item.logprobs)
        choice.prompt_logprobs.extend(item.prompt_logprobs)
        if item.finish_reason is not None:
            choice.finish_reason = item.finish_reason
    assert usage is not None, "a finished stream ends with its usage"
    return choices, usage
