"""Greedy output does not depend on batching or prefix reuse, and matches llama-cpp-python's Llama."""

from __future__ import annotations

import asyncio

from llama_cpp import Llama

from minimill.engine.engine import Engine
from minimill.engine.llama import KV_TYPES, LlamaModel
from tests.engine.conftest import collect, make_engine

BF16 = KV_TYPES["bf16"]
QUESTIONS = [
    "What is the capital of France?", "Name three colours.", "Write a haiku about rain.",
    "Explain gravity in one sentence.", "List two prime numbers.", "What do bees make?",
    "Say hello in Spanish.", "What is 12 times 3?", "Describe a cat.", "Why is the sky blue?",
    "Give me a fruit.", "What is Python?", "Count to five.", "Name an ocean.", "What is ice?",
    "Who wrote Hamlet?",
]


def prompts(engine: Engine) -> list[list[int]]:
    return [engine.chat_tokens([{"role": "user", "content": q}]) for q in QUESTIONS]


def test_alone_equals_among_fifteen_others_equals_reference(model: LlamaModel) -> None:
    alone_engine = make_engine(model, retain_cells=0, retain_ram=False)
    batch_engine = make_engine(model, retain_cells=0, retain_ram=False)
    try:
        target = prompts(alone_engine)[0]
        alone = asyncio.run(collect(alone_engine, target, max_tokens=32, temperature=0))

        async def crowd() -> list:
            return await asyncio.gather(*(collect(batch_engine, p, max_tokens=32, temperature=0)
                                          for p in prompts(batch_engine)))

        batched = asyncio.run(crowd())
    finally:
        alone_engine.close()
        batch_engine.close()
    assert batched[0].tokens[0] == alone.tokens[0]
    assert len(alone.tokens[0]) > 4

    reference = Llama(str(model.path), n_ctx=1024, n_threads=2, verbose=False,
                      type_k=BF16, type_v=BF16, flash_attn=True)
    expected: list[int] = []
    for token in reference.generate(target, temp=0.0, top_k=1):
        expected.append(token)
        if len(expected) == len(alone.tokens[0]) or model.is_eog(token):
            break
    assert alone.tokens[0] == expected


def test_reused_prefix_gives_the_same_output_and_exact_cached_tokens(model: LlamaModel) -> None:
    system = "You are a careful assistant. Answer briefly and precisely. " * 6
    fresh = make_engine(model)
    try:
        warm = fresh.chat_tokens([{"role": "system", "content": system}, {"role": "user", "content": "Hi!"}])
        asked = fresh.chat_tokens([{"role": "system", "content": system},
                                   {"role": "user", "content": "What is the capital of Italy?"}])
        shared = next(i for i, (a, b) in enumerate(zip(warm, asked, strict=False)) if a != b)
        asyncio.run(collect(fresh, warm, max_tokens=4, temperature=0))
        reused = asyncio.run(collect(fresh, asked, max_tokens=24, temperature=0))
    finally:
        fresh.close()
    cold_engine = make_engine(model, retain_cells=0, retain_ram=False)
    try:
        cold = asyncio.run(collect(cold_engine, asked, max_tokens=24, temperature=0))
    finally:
        cold_engine.close()
    assert reused.usage.cached_tokens == shared > 50
    assert cold.usage.cached_tokens == 0
    assert reused.tokens[0] == cold.tokens[0]


def test_reuse_under_slot_pressure_gives_what_each_prompt_gives_alone(model: LlamaModel) -> None:
    """Two slots, finished prefixes kept: requests that copy a kept prefix arrive together with requests that
    need its slot. Each answer must be the one its prompt gets on an engine that reuses nothing."""
    system = "You are a careful assistant who answers in one short sentence. " * 4
    questions = QUESTIONS[:7]
    crowded = make_engine(model, max_seqs=2, kv_size=2048)
    plain = make_engine(model, retain_cells=0, retain_ram=False)
    try:
        def prompt(engine: Engine, q: str, shared: bool) -> list[int]:
            messages = [{"role": "system", "content": system}] if shared else []
            return engine.chat_tokens([*messages, {"role": "user", "content": q}])

        # The first leaves the shared prefix kept; then each pair is one that copies it and one that does not.
        asked = [prompt(crowded, q, shared=k == 0 or k % 2 == 1) for k, q in enumerate(questions)]

        async def waves() -> list:
            out = [await collect(crowded, asked[0], max_tokens=8, temperature=0)]
            for k in range(1, len(asked), 2):  # a reuser and a newcomer at once, both wanting a slot
                out += await asyncio.gather(*(collect(crowded, p, max_tokens=8, temperature=0)
                                              for p in asked[k:k + 2]))
            return out

        got = asyncio.run(waves())
        alone = [asyncio.run(collect(plain, p, max_tokens=8, temperature=0)) for p in asked]
    finally:
        crowded.close()
        plain.close()
    assert sum(o.usage.cached_tokens for o in got) > 0  # prefixes were reused
    assert [o.tokens[0] for o in got] == [o.tokens[0] for o in alone]
