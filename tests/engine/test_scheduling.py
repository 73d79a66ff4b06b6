"""The real engine under pressure: preemption resumes without a wrong token; n shares the prompt."""

from __future__ import annotations

import asyncio

from minimill.engine.llama import LlamaModel
from minimill.engine.types import GenerationRequest, SamplingParams
from tests.engine.conftest import collect, make_engine

PROMPTS = ["The history of the city begins", "In the morning the baker", "Rivers flow toward",
           "A good recipe for bread", "The mountain climbers said"]


def test_preempted_sequences_resume_with_the_same_tokens(model: LlamaModel) -> None:
    roomy = make_engine(model, retain_cells=0, retain_ram=False)
    tight = make_engine(model, retain_cells=0, retain_ram=False, kv_size=256, max_seqs=5, step_tokens=64)
    try:
        prompts = [roomy.tokenize(p) for p in PROMPTS]

        async def all_of(engine) -> list:  # type: ignore[no-untyped-def]
            return await asyncio.gather(*(collect(engine, p, max_tokens=60, temperature=0, ignore_eos=True)
                                          for p in prompts))

        expected = [asyncio.run(collect(roomy, p, max_tokens=60, temperature=0, ignore_eos=True)) for p in prompts]
        squeezed = asyncio.run(all_of(tight))
        assert tight.scheduler.counters.preemptions > 0
        for want, got in zip(expected, squeezed, strict=True):
            assert got.tokens[0] == want.tokens[0]
            assert got.finish[0] == "length"
        tight.scheduler.check()
        assert tight.scheduler.cells.used == 0
    finally:
        roomy.close()
        tight.close()


def test_n_choices_copy_the_prompt_once(model: LlamaModel) -> None:
    engine = make_engine(model)
    try:
        prompt = engine.tokenize("Write one sentence about the moon and the sea, please. " * 4)
        before = engine.scheduler.counters.prompt_tokens
        out = asyncio.run(collect(engine, prompt, n=4, max_tokens=8, temperature=0.8, seed=11))
        assert sorted(out.texts) == [0, 1, 2, 3]
        # choices 1..3 copied all but the last prompt token from choice 0
        assert engine.scheduler.counters.cached_tokens == 3 * (len(prompt) - 1)
        assert engine.scheduler.counters.prompt_tokens - before == 4 * len(prompt)
        assert out.usage.completion_tokens == 32 and out.usage.cached_tokens == 0
    finally:
        engine.close()


def test_abort_frees_the_kv_at_the_next_step(model: LlamaModel) -> None:
    engine = make_engine(model, retain_cells=0, retain_ram=False)
    try:
        async def start_then_leave() -> None:
            request = GenerationRequest("a", tuple(engine.tokenize("Tell me everything")),
                                        SamplingParams(max_tokens=500, temperature=0, ignore_eos=True))
            stream = engine.generate(request)
            for _ in range(3):
                await anext(stream)
            await stream.aclose()  # type: ignore[attr-defined]
            for _ in range(100):
                if engine.stats().running == 0 and engine.stats().kv_used == 0:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"still live after abort: {engine.stats()}")

        asyncio.run(start_then_leave())
    finally:
        engine.close()


def test_a_failed_step_fails_its_requests_and_the_engine_recovers(model: LlamaModel) -> None:
    import pytest

    from minimill.errors import EngineUnavailable

    engine = make_engine(model)
    real_execute = engine.runner.execute

    def fail_once(plan):  # type: ignore[no-untyped-def]
        engine.runner.execute = real_execute  # type: ignore[method-assign]
        raise RuntimeError("injected native failure")

    try:
        engine.runner.execute = fail_once  # type: ignore[method-assign]
        with pytest.raises(EngineUnavailable):
            asyncio.run(collect(engine, engine.tokenize("Hello there"), max_tokens=4, temperature=0))
        after = asyncio.run(collect(engine, engine.tokenize("Hello there"), max_tokens=4, temperature=0))
        assert len(after.tokens[0]) == 4 and after.usage.cached_tokens == 0
        assert engine.stats().running == 0
    finally:
        engine.close()
