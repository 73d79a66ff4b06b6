"""Speculative decoding on a real model: drafts (a user's prediction, the context by prompt lookup) change how
many steps an answer takes, never the answer: greedy token for token, alone and among eight, with stop strings,
`n`, logprobs and a grammar; the KV after refused drafts is the KV of plain decoding (the next token's logits
are the same). Sampled output keeps its distribution (tests/unit/test_speculation.py); its seeded tokens are not
compared, since llama.cpp's CPU matrix products round differently at other batch sizes, with drafts or not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from minimill.engine.engine import Engine
from minimill.engine.llama import ContextShape, LlamaContext, LlamaModel
from minimill.engine.plan import PlanItem, StepPlan
from minimill.engine.runner import ChoiceSampler, Runner
from minimill.engine.speculation import StepCost
from minimill.engine.types import SamplingParams, SpecParams
from tests.engine.conftest import Outcome, collect, make_engine

QUESTIONS = ["Name three colours.", "Write a haiku about rain.", "Explain gravity in one sentence.",
             "What do bees make?", "Say hello in Spanish.", "Describe a cat.", "Why is the sky blue?",
             "Count to five."]


class FreeRows(StepCost):
    """A step cost where rows are free (a GPU's): every draft is as long as allowed, so verification is
    exercised on every step whatever this CPU measures."""

    def best_length(self, alpha: float, rows: int, sequences: int, most: int, extra: float = 0.0) -> int:
        return most


def speculating(model: LlamaModel, **overrides: object) -> Engine:
    engine = make_engine(model, speculation="ngram", **overrides)
    engine.scheduler.step_cost = FreeRows()
    return engine


def wrong_in_the_middle(tokens: list[int]) -> tuple[int, ...]:
    """A prediction right for half the answer, then one token off, then right again."""
    middle = len(tokens) // 2
    return (*tokens[:middle], (tokens[middle] + 7) % 1000 + 10, *tokens[middle + 1:])


def test_greedy_answers_are_the_same_with_drafts_alone_and_among_eight(model: LlamaModel) -> None:
    plain, spec = make_engine(model), speculating(model)
    try:
        prompts = [plain.chat_tokens([{"role": "user", "content": q}]) for q in QUESTIONS]
        reference = [asyncio.run(collect(plain, p, max_tokens=32, temperature=0)) for p in prompts]
        predictions = [wrong_in_the_middle(r.tokens[0]) for r in reference]
        alone = [asyncio.run(collect(spec, p, max_tokens=32, temperature=0, spec=SpecParams(prediction=pred)))
                 for p, pred in zip(prompts, predictions, strict=True)]

        async def crowd() -> list[Outcome]:
            return await asyncio.gather(*(collect(spec, p, max_tokens=32, temperature=0,
                                                  spec=SpecParams(prediction=pred))
                                          for p, pred in zip(prompts, predictions, strict=True)))

        together = asyncio.run(crowd())
        lookup = [asyncio.run(collect(spec, p, max_tokens=32, temperature=0)) for p in prompts]  # context only
    finally:
        plain.close()
        spec.close()
    for ref, one, crowded, looked_up in zip(reference, alone, together, lookup, strict=True):
        assert one.tokens[0] == ref.tokens[0] and crowded.tokens[0] == ref.tokens[0]
        assert looked_up.tokens[0] == ref.tokens[0] and one.finish == ref.finish
        assert one.usage.completion_tokens == ref.usage.completion_tokens
    # The drafts were really there, kept and refused: verification was exercised, not skipped.
    assert spec._drafted["prediction"] > 100 and 0 < spec._kept["prediction"] < spec._drafted["prediction"]
    assert sum(o.usage.rejected_prediction_tokens for o in alone) > 0
    assert all(o.usage.accepted_prediction_tokens >= len(r.tokens[0]) // 2 for o, r in zip(alone, reference,
                                                                                         strict=True))


def edge_cases(plain: Engine, prompt: list[int]) -> list[dict[str, object]]:
    """Greedy requests where drafts meet the edges of decoding: a stop string the drafts run past, max_tokens
    inside a draft, logprobs, `n` and a grammar."""
    words = asyncio.run(collect(plain, prompt, max_tokens=48, temperature=0)).texts[0].split()
    return [
        {"max_tokens": 48, "temperature": 0, "stop": (words[len(words) // 2],)},
        {"max_tokens": 7, "temperature": 0},
        {"max_tokens": 32, "temperature": 0, "logprobs": 3},
        {"max_tokens": 32, "temperature": 0, "n": 2},
        {"max_tokens": 40, "temperature": 0, "grammar": plain.json_object_grammar},
    ]


def assert_unchanged_at_the_edges(plain: Engine, spec: Engine,
                                  speculation: Callable[[Outcome], dict[str, object]] = lambda _: {}) -> None:
    """Each of `edge_cases` answers the same on `spec` as on `plain`; `speculation(plain's answer)` gives the
    request's own drafting options (a prediction)."""
    prompt = plain.chat_tokens([{"role": "user", "content": "Describe a cat in two sentences."}])
    for case in edge_cases(plain, prompt):
        n = int(case.pop("n", 1))  # type: ignore[call-overload]
        expected = asyncio.run(collect(plain, prompt, n=n, **case))
        got = asyncio.run(collect(spec, prompt, n=n, **speculation(expected), **case))
        assert got.tokens == expected.tokens, case
        assert got.texts == expected.texts and got.finish == expected.finish, case
        assert got.usage.completion_tokens == expected.usage.completion_tokens


def test_stop_strings_n_logprobs_and_a_grammar_are_unchanged(model: LlamaModel) -> None:
    plain, spec = make_engine(model), speculating(model)
    try:
        assert_unchanged_at_the_edges(
            plain, spec, lambda expected: {"spec": SpecParams(prediction=wrong_in_the_middle(expected.tokens[0]))})
    finally:
        plain.close()
        spec.close()
    assert spec._drafted["prediction"] > 0


def test_logprobs_of_drafted_tokens_are_the_plain_ones(model: LlamaModel) -> None:
    plain, spec = make_engine(model), speculating(model)
    try:
        prompt = plain.chat_tokens([{"role": "user", "content": "Why is the sky blue?"}])
        expected = asyncio.run(collect(plain, prompt, max_tokens=24, temperature=0, logprobs=2))
        got = asyncio.run(collect(spec, prompt, max_tokens=24, temperature=0, logprobs=2,
                                  spec=SpecParams(prediction=tuple(expected.tokens[0]))))
    finally:
        plain.close()
        spec.close()
    assert got.tokens == expected.tokens
    assert spec._kept["prediction"] > 10  # most tokens came as kept drafts


def test_the_kv_after_refused_drafts_is_the_kv_of_plain_decoding(model: LlamaModel) -> None:
    prompt = model.tokenize("The quick brown fox jumps over the lazy dog. The quick brown")
    greedy = SamplingParams(temperature=0)
    runners = []
    for _ in range(2):
        runner = Runner(LlamaContext(model, ContextShape(n_ctx=512, n_seq_max=2, n_batch=64, threads=2)))
        runner.register(1, ChoiceSampler(model.make_sampler(greedy, None), None))
        runners.append(runner)
    plain, spec = runners
    try:
        first = plain.execute(StepPlan(items=(PlanItem(1, 0, 0, tuple(prompt), True),))).sampled[0].token
        assert spec.execute(StepPlan(items=(PlanItem(1, 0, 0, tuple(prompt), True),))).sampled[0].token == first
        tokens = [first]
        for _ in range(2):  # plain decoding, one token a step: tokens[1] and tokens[2]
            start = len(prompt) + len(tokens) - 1
            tokens.append(plain.execute(StepPlan(items=(PlanItem(1, 0, start, (tokens[-1],), True),)))
                          .sampled[0].token)
        # One step with a draft: the first drafted token right, the second wrong, then one more.
        wrong = (tokens[2] + 1) % model.n_vocab
        drafted = spec.execute(StepPlan(items=(PlanItem(1, 0, len(prompt), (first, tokens[1], wrong, 5), True,
                                                        drafted=3),))).sampled
        assert [s.token for s in drafted] == tokens[1:3]  # kept tokens[1], drew tokens[2] instead of `wrong`
        # The next step computes tokens[2] at its position on both: the same logits, the same next token.
        step = StepPlan(items=(PlanItem(1, 0, len(prompt) + 2, (tokens[2],), True),))
        plain_next = plain.execute(step).sampled[0].token
        plain_logits = np.array(plain.ctx.logits(0))
        spec_next = spec.execute(step).sampled[0].token
        spec_logits = np.array(spec.ctx.logits(0))
    finally:
        for runner in runners:
            ctx = runner.ctx
            runner.close()
            ctx.close()
    assert spec_next == plain_next
    np.testing.assert_allclose(spec_logits, plain_logits, rtol=0, atol=1e-4)
