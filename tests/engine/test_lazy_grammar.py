"""A choice with a grammar checks only the token it drew against it (the full vocabulary only when that
token is refused): greedy, token for token the same output as filtering the vocabulary first; sampled,
valid and reproducible by seed."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from minimill.engine.llama import ContextShape, LlamaContext, LlamaModel, TokenBatch, json_schema_to_grammar
from minimill.engine.types import SamplingParams

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age", "tags"]}


def generate(model: LlamaModel, text: str, choose: Callable[[LlamaContext, int], int], max_tokens: int) -> str:
    """Decode `text`, then the tokens `choose(ctx, row)` picks, until the end of generation."""
    ctx = LlamaContext(model, ContextShape(n_ctx=512, n_seq_max=1, n_batch=512, threads=2))
    batch = TokenBatch(512)
    try:
        prompt = model.tokenize(text)
        for pos, token in enumerate(prompt):
            row = batch.add(token, pos, 0, pos == len(prompt) - 1)
        assert ctx.decode(batch) == 0
        produced: list[int] = []
        for pos in range(len(prompt), len(prompt) + max_tokens):
            token = choose(ctx, row)
            if model.is_eog(token):
                break
            produced.append(token)
            batch.clear()
            row = batch.add(token, pos, 0, True)
            assert ctx.decode(batch) == 0
        return model.detokenize(produced)
    finally:
        batch.close()
        ctx.close()


def valid(text: str) -> bool:
    value = json.loads(text, strict=False)  # the grammar lets strings hold control characters; JSON parsers may too
    return set(value) == {"name", "age", "tags"} and isinstance(value["age"], int)


@pytest.mark.parametrize("penalty", [0.0, 0.8])
def test_lazy_grammar_matches_grammar_first_token_for_token(model: LlamaModel, penalty: float) -> None:
    params = SamplingParams(max_tokens=60, temperature=0.0, presence_penalty=penalty,
                            grammar=json_schema_to_grammar(SCHEMA))
    lazy = model.make_sampler(params, None)
    strict = type(lazy)(model, params, None, grammar_first=True)
    refused = 0

    def both(ctx: LlamaContext, row: int) -> int:
        nonlocal refused
        best = int(ctx.logits(row).argmax())
        token = lazy.sample(ctx, row)
        assert strict.sample(ctx, row) == token
        refused += token != best
        return token

    try:
        text = generate(model, "Describe a person called Anna, aged 34, who likes tea and chess, as JSON: ", both,
                        params.max_tokens)
    finally:
        lazy.close()
        strict.close()
    assert valid(text)
    assert refused > 0  # the fallback ran: the grammar overruled the unconstrained best token (or a penalty did)


def test_sampled_lazy_grammar_stays_valid_and_reproducible(model: LlamaModel) -> None:
    # bounded strings and arrays: at temperature 1.2 an unbounded string may run past any max_tokens
    bounded = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                                                "age": {"type": "integer"},
                                                "tags": {"type": "array", "maxItems": 3,
                                                         "items": {"type": "string", "maxLength": 12}}},
               "required": ["name", "age", "tags"]}
    params = SamplingParams(max_tokens=400, temperature=1.2, grammar=json_schema_to_grammar(bounded))

    def sampled(seed: int) -> str:
        chain = model.make_sampler(params, seed)
        try:
            return generate(model, "A person as JSON: ", chain.sample, params.max_tokens)
        finally:
            chain.close()

    outputs = [sampled(seed) for seed in (1, 2, 3)]
    assert all(valid(text) for text in outputs)
    assert len(set(outputs)) > 1  # it does sample
    assert sampled(2) == outputs[1]  # and the seed fixes the draw
