"""Scoring a prompt: the log-probability of each prompt token, computed in the prompt's own prefill, equals
what greedy generation reported for the same tokens; max_tokens 0 generates nothing."""

from __future__ import annotations

import asyncio

import pytest

from minimill.engine.engine import Engine
from minimill.engine.types import ChoiceDelta, GenerationRequest, SamplingParams, TokenLogprob, Usage


async def generate(engine: Engine, prompt: list[int], **params: object) -> tuple[list[ChoiceDelta], Usage]:
    request = GenerationRequest("score", tuple(prompt), SamplingParams(**params))  # type: ignore[arg-type]
    deltas, usage = [], None
    async for item in engine.generate(request):
        if isinstance(item, ChoiceDelta):
            deltas.append(item)
        else:
            usage = item
    assert usage is not None
    return deltas, usage


def test_prompt_logprobs_equal_the_logprobs_of_the_same_tokens_generated_greedily(engine: Engine) -> None:
    prompt = engine.tokenize("The three primary colours are")
    deltas, _ = asyncio.run(generate(engine, prompt, max_tokens=12, temperature=0.0, logprobs=2, ignore_eos=True))
    generated = [t for d in deltas for t in d.token_ids]
    reported: list[TokenLogprob] = [lp for d in deltas for lp in d.logprobs]
    assert len(generated) == len(reported) == 12

    whole = prompt + generated
    # the prefix is live from the run above: scoring must compute it again, not copy it
    scored, usage = asyncio.run(generate(engine, whole, max_tokens=0, prompt_logprobs=2, logprobs=2))
    assert len(scored) == 1 and scored[0].finish_reason == "length" and scored[0].text == ""
    assert usage.completion_tokens == 0 and usage.cached_tokens == 0 and usage.prompt_tokens == len(whole)
    scores = scored[0].prompt_logprobs
    assert [s.token_id for s in scores] == whole[1:]  # every token after the first, in order
    for score, greedy in zip(scores[len(prompt) - 1:], reported, strict=True):
        assert score.token_id == greedy.token_id
        assert score.logprob == pytest.approx(greedy.logprob, abs=0.05)  # a batch of 19 rows vs one at a time
        assert score.top[0].token_id == greedy.token_id  # greedy picked the most likely token
    assert all(s.logprob <= 0 and len(s.top) == 2 for s in scores)


def test_scoring_and_generating_in_one_request(engine: Engine) -> None:
    prompt = engine.tokenize("One, two, three,")
    deltas, usage = asyncio.run(generate(engine, prompt, max_tokens=3, temperature=0.0, prompt_logprobs=0,
                                         logprobs=0, ignore_eos=True))
    assert len(deltas[0].prompt_logprobs) == len(prompt) - 1 and not any(d.prompt_logprobs for d in deltas[1:])
    assert usage.completion_tokens == 3 and sum(len(d.token_ids) for d in deltas) == 3
