"""A step costs what it computes: 30 finished chats retained do not widen the attention of later steps.

Attention in llama.cpp's unified KV spans every used cell, so the cells in use at a decoding step are what
it costs (beyond its own tokens). The scheduler counts them (`steps`, `step_cells`); the test compares the
mean over the same 8 streams on a fresh engine and after 30 chats have finished, with the default retention
(finished prefixes leave the live KV for RAM) and, to show the figure can fail, with everything kept live.
"""

from __future__ import annotations

import asyncio

from minimill.engine.engine import Engine
from minimill.engine.llama import LlamaModel
from tests.engine.conftest import collect, make_engine
from tests.engine.test_named_kv import wait_idle

STREAMS = [f"Write a short note number {i} about the weather in a small town by the sea." for i in range(8)]
CHAT = ("You are a helpful assistant for a bakery. Conversation {i}: the customer asks about bread, cakes, "
        "opening hours and prices, and wants a friendly, precise and short answer every time, please. "
        "Customer {i} says: what do you recommend for a birthday with twelve guests?")


def mean_step_cells(engine: Engine, prompts: list[str]) -> tuple[float, list[list[int]]]:
    """Run the prompts as concurrent greedy streams; the mean KV cells in use over the steps they took."""
    before = engine.scheduler.counters.steps, engine.scheduler.counters.step_cells

    async def all_of() -> list[list[int]]:
        outs = await asyncio.gather(*(collect(engine, engine.tokenize(p), max_tokens=24, temperature=0,
                                              ignore_eos=True) for p in prompts))
        return [out.tokens[0] for out in outs]

    tokens = asyncio.run(all_of())
    wait_idle(engine)
    steps = engine.scheduler.counters.steps - before[0]
    assert steps >= 24  # every stream decoded 24 tokens, some steps shared
    return (engine.scheduler.counters.step_cells - before[1]) / steps, tokens


def run_chats(engine: Engine, count: int) -> int:
    """Finish `count` distinct chats (prompt + 32 generated tokens each); the cells they computed."""
    prompts = [engine.tokenize(CHAT.format(i=i)) for i in range(count)]

    async def all_of() -> None:
        await asyncio.gather(*(collect(engine, p, tenant="chats", max_tokens=32, temperature=0, ignore_eos=True)
                               for p in prompts))

    asyncio.run(all_of())
    wait_idle(engine)
    return sum(len(p) + 32 for p in prompts)


def test_finished_chats_retained_in_ram_leave_the_step_cost_unchanged(model: LlamaModel) -> None:
    default = make_engine(model, kv_size=8192, max_seqs=48)
    live = make_engine(model, kv_size=8192, max_seqs=48, retain_cells=20000, retain_ram=False)
    try:
        fresh, fresh_tokens = mean_step_cells(default, STREAMS)
        saved = default.scheduler.ram.counters.saved  # the streams' own prefixes
        computed = run_chats(default, 30)
        # The 30 chats left the live KV for RAM (none is a prefix of another), nothing else stayed live.
        assert default.scheduler.ram.counters.saved - saved == 30 and len(default.scheduler.ram) == saved + 30
        assert default.scheduler.cells.used == 0 and not default.scheduler.retained
        busy, busy_tokens = mean_step_cells(default, STREAMS)
        assert busy <= fresh * 1.10, (fresh, busy)
        assert len(busy_tokens) == len(fresh_tokens) == 8 and all(len(t) == 24 for t in busy_tokens)

        live_fresh, _ = mean_step_cells(live, STREAMS)
        assert run_chats(live, 30) == computed
        assert live.scheduler.cells.used >= computed * 0.9  # all kept live (their common opening shared)
        live_busy, _ = mean_step_cells(live, STREAMS)
        # Kept live, the same chats make every later step attend some 3,000 more cells.
        assert live_busy > live_fresh * 1.5 and live_busy - live_fresh >= computed * 0.9, (live_fresh, live_busy)
        default.scheduler.check()
        live.scheduler.check()
    finally:
        default.close()
        live.close()
