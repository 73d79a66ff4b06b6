"""Batch work in a real engine: an online request interrupts a step of batch work, the batch tokens are
computed again, and every greedy output is what it would have been alone."""

from __future__ import annotations

import asyncio

from minimill.engine.llama import LlamaModel
from minimill.engine.types import ChoiceDelta, GenerationRequest, SamplingParams
from tests.engine.conftest import collect, make_engine


async def tokens_of(engine, prompt: list[int], priority: str, max_tokens: int) -> list[int]:  # type: ignore[no-untyped-def]
    request = GenerationRequest(request_id=f"r-{priority}", prompt_tokens=tuple(prompt), priority=priority,  # type: ignore[arg-type]
                                params=SamplingParams(max_tokens=max_tokens, temperature=0))
    out: list[int] = []
    async for item in engine.generate(request):
        if isinstance(item, ChoiceDelta):
            out.extend(item.token_ids)
    return out


def test_online_requests_interrupt_batch_steps_and_outputs_do_not_change(model: LlamaModel) -> None:
    engine = make_engine(model, retain_cells=0, retain_ram=False, batch_idle_step_tokens=256,
                         batch_step_tokens=256)
    try:
        long_text = engine.tokenize("The history of the lighthouse keepers of the northern coast. " * 60)
        questions = [engine.chat_tokens([{"role": "user", "content": f"Name a colour, {n}."}]) for n in range(6)]
        alone_batch = asyncio.run(collect(engine, long_text, max_tokens=6, temperature=0)).tokens[0]
        alone_online = [asyncio.run(collect(engine, q, max_tokens=6, temperature=0)).tokens[0] for q in questions]

        async def mixed() -> tuple[list[int], list[list[int]]]:
            batch = asyncio.create_task(tokens_of(engine, long_text, "batch", 6))
            online = []
            for question in questions:  # arrive while the batch request prefills in 256-token steps
                await asyncio.sleep(0.15)
                online.append(asyncio.create_task(tokens_of(engine, question, "online", 6)))
            return await batch, list(await asyncio.gather(*online))

        batch_out, online_out = asyncio.run(mixed())
        interrupted = engine._metrics.aborted_steps.labels(engine.name)._value.get()
    finally:
        engine.close()
    assert interrupted >= 1, "no batch step was interrupted"
    assert batch_out == alone_batch and online_out == alone_online
    engine.scheduler.check()
