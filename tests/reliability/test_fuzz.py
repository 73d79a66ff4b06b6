"""Hypothesis against a real server: random JSON schemas (→ grammars) and random sampling parameters. The
oracle is the server itself: every answer a 200 or a 4xx in OpenAI's shape, and the engine never restarts."""

from __future__ import annotations

from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.conftest import Target

MODEL = "smollm2-135m"
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8)
bounds = st.one_of(st.none(), st.integers(min_value=-3, max_value=3000))
scalars = st.one_of(
    st.fixed_dictionaries({"type": st.just("string")}, optional={
        "maxLength": bounds, "minLength": bounds, "format": st.sampled_from(["date", "time", "uuid", "email", "x"]),
        "pattern": st.text(st.sampled_from("^$ab.*+?{}[]()|\\\\0u9-,"), max_size=12)}),
    st.fixed_dictionaries({"type": st.sampled_from(["integer", "number"])}, optional={
        "minimum": st.integers(-10**12, 10**12), "maximum": st.integers(-10**12, 10**12)}),
    st.fixed_dictionaries({"type": st.sampled_from(["boolean", "null"])}),
    st.fixed_dictionaries({"enum": st.lists(st.one_of(names, st.integers(), st.none()), min_size=0, max_size=4)}),
    st.fixed_dictionaries({"const": st.one_of(names, st.integers())}),
)
schemas = st.recursive(scalars, lambda inner: st.one_of(
    st.fixed_dictionaries({"type": st.just("array"), "items": inner}, optional={"minItems": bounds,
                                                                                "maxItems": bounds}),
    st.fixed_dictionaries({"type": st.just("object"), "properties": st.dictionaries(names, inner, max_size=3)},
                          optional={"required": st.lists(names, max_size=2),
                                    "additionalProperties": st.booleans()}),
    st.fixed_dictionaries({"anyOf": st.lists(inner, min_size=1, max_size=3)}),
), max_leaves=8)

sampling = st.fixed_dictionaries({}, optional={
    "temperature": st.floats(0, 2), "top_p": st.floats(0.01, 1), "top_k": st.integers(0, 10**9),
    "min_p": st.floats(0, 1), "presence_penalty": st.floats(-2, 2), "frequency_penalty": st.floats(-2, 2),
    "repetition_penalty": st.floats(0.01, 2), "seed": st.integers(-10**20, 10**20), "n": st.integers(1, 2),
    "stop": st.lists(st.text(max_size=6), max_size=4),
    "logit_bias": st.dictionaries(st.integers(-5, 60_000).map(str), st.floats(-100, 100), max_size=8),
    "logprobs": st.booleans(), "ignore_eos": st.booleans(), "max_tokens": st.integers(1, 8),
})


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


def post(target: Target, body: dict[str, Any]) -> None:
    check(target.http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "Give me JSON."}], "max_tokens": 6, **body}))


def test_random_schemas_never_hurt_the_engine(target: Target) -> None:
    @FUZZ
    @given(schema=schemas, temperature=st.sampled_from([0.0, 0.8]))
    def run(schema: dict[str, Any], temperature: float) -> None:
        post(target, {"temperature": temperature, "seed": 1,
                      "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})

    run()
    assert target.alive() and target.http.get("/health").json()["models"][MODEL]["restarts"] == 0


def test_random_sampling_never_hurts_the_engine(target: Target) -> None:
    @FUZZ
    @given(params=sampling, json_mode=st.booleans())
    def run(params: dict[str, Any], json_mode: bool) -> None:
        post(target, {**params, **({"response_format": {"type": "json_object"}} if json_mode else {})})

    run()
    assert target.alive() and target.http.get("/health").json()["models"][MODEL]["restarts"] == 0
