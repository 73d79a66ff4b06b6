"""A choice with a grammar checks only the token it drew against it (the full vocabulary only when that
token is refused): greedy, token for token the same output as filtering the vocabulary first; sampled,
valid and reproducible by seed."""

from __future__ import annotations

import json

import pytest

from minimill.engine.llama import ContextShape, LlamaContext, LlamaModel, TokenBatch, json_schema_to_grammar
from minimill.engine.types import SamplingParams

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age", "tags"]}


@pytest.mark.parametrize("penalty", [0.0, 0.8])
def test_lazy_grammar_matches_grammar_first_token_for_token(model: LlamaModel, penalty: float) -> None:
    params = SamplingParams(max_tokens=60, temperature=0.0, presence_penalty=penalty,
                            grammar=json_schema_to_grammar(SCHEMA))
    lazy, strict = model.make_sampler(params, None), type(model.make_sampler(params, None))
    strict_chain = strict(model, params, None, grammar_first=True)
    ctx = LlamaContext(model, ContextShape(n_ctx=512, n_seq_max=1, n_batch=512, threads=2))
    batch = TokenBatch(512)
    try:
        prompt = model.tokenize("Describe a person called Anna, aged 34, who likes tea and chess, as JSON: ")
        for pos, token in enumerate(prompt):
            row = batch.add(token, pos, 0, pos == len(prompt) - 1)
        assert ctx.decode(batch) == 0
        produced, refused = [], 0
        for pos in range(len(prompt), len(prompt) + params.max_tokens):
            best = int(ctx.logits(row).argmax())
            token = lazy.sample(ctx, row)
            assert strict_chain.sample(ctx, row) == token
            refused += token != best and penalty == 0.0
            if model.is_eog(token):
                break
            produced.append(token)
            batch.clear()
            row = batch.add(token, pos, 0, True)
            assert ctx.decode(batch) == 0
        value = json.loads(model.detokenize(produced))
        assert set(value) == {"name", "age", "tags"} and isinstance(value["age"], int)
        if penalty == 0.0:
            assert refused > 0  # the fallback path ran: the grammar overruled the unconstrained best token
    finally:
        for chain in (lazy, strict_chain):
            chain.close()
        batch.close()
        ctx.close()


def _generate(model: LlamaModel, params: SamplingParams, seed: int) -> str:
    chain = model.make_sampler(params, seed)
    ctx = LlamaContext(model, ContextShape(n_ctx=512, n_seq_max=1, n_batch=512, threads=2))
    batch = TokenBatch(512)
    try:
        prompt = model.tokenize("A person as JSON: ")
        for pos, token in enumerate(prompt):
            row = batch.add(token, pos, 0, pos == len(prompt) - 1)
        assert ctx.decode(batch) == 0
        produced = []
        for pos in range(len(prompt), len(prompt) + params.max_tokens):
            token = chain.sample(ctx, row)
            if model.is_eog(token):
                break
            produced.append(token)
            batch.clear()
            row = batch.add(token, pos, 0, True)
            assert ctx.decode(batch) == 0
        return model.detokenize(produced)
    finally:
        chain.close()
        batch.close()
        ctx.close()


def test_sampled_lazy_grammar_stays_valid_and_reproducible(model: LlamaModel) -> None:
    params = SamplingParams(max_tokens=80, temperature=1.2, grammar=json_schema_to_grammar(SCHEMA))
    outputs = [_generate(model, params, seed) for seed in (1, 2, 3)]
    for text in outputs:
        value = json.loads(text)
        assert set(value) == {"name", "age", "tags"} and isinstance(value["age"], int)
    assert len(set(outputs)) > 1  # it does sample
    assert _generate(model, params, 2) == outputs[1]  # and the seed fixes the draw
