"""Property-based fuzz of every operation in the served OpenAPI schema (schemathesis + hypothesis), against a
server in its own process. Whatever arrives, the answer is never a 5xx; every 4xx is OpenAI's error shape;
nothing hangs; the engine (a child process) never restarts.

Each operation gets schema-valid and schema-breaking cases. Generated bodies are tamed so that generation
stays cheap (`max_tokens` at most 8, `n` at most 2) and, most of the time, name the served model, so that
they reach the engine rather than stop at the 404 for an unknown model.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.schemas import APIOperation

from tests.reliability.conftest import Target

MODEL = "smollm2-135m"
REQUEST_TIMEOUT_S = 60
MIN_CASES = 2000
HEAVY, LIGHT, FIXED = 250, 100, 10  # cases per operation: it generates / it has parameters / it has none

# Every operation of the schema with its number of cases; `test_every_operation_is_fuzzed` keeps this complete.
OPERATIONS: dict[str, int] = {
    "POST /v1/chat/completions": HEAVY + 150,
    "POST /v1/completions": HEAVY + 150,
    "POST /v1/caches": HEAVY,
    "POST /v1/batches": HEAVY,
    "POST /v1/files": LIGHT,
    "POST /tokenize": LIGHT,
    "POST /detokenize": LIGHT,
    "GET /v1/caches/{cache_id}": LIGHT,
    "PATCH /v1/caches/{cache_id}": LIGHT,
    "DELETE /v1/caches/{cache_id}": LIGHT,
    "GET /v1/files": LIGHT,
    "GET /v1/files/{file_id}": LIGHT,
    "DELETE /v1/files/{file_id}": LIGHT,
    "GET /v1/files/{file_id}/content": LIGHT,
    "GET /v1/batches": LIGHT,
    "GET /v1/batches/{batch_id}": LIGHT,
    "POST /v1/batches/{batch_id}/cancel": LIGHT,
    "GET /v1/models/{model_id}": LIGHT,
    "GET /v1/caches": FIXED,
    "GET /v1/usage": FIXED,
    "GET /v1/prices": FIXED,
    "GET /v1/models": FIXED,
    "GET /v1/evals": FIXED,
    "GET /v1/evals/plot.png": FIXED,
    "GET /health": FIXED,
    "GET /metrics": FIXED,
}
CAPS = {"max_tokens": 8, "max_completion_tokens": 8, "n": 2, "best_of": 2}
MAX_PROMPTS = 4  # of a completions request's list of prompts
# What a body's `model` becomes: as generated (None), the served model, or a name no UTF-8 can carry (JSON's
# "\ud800" parses into a lone surrogate, which error messages quote). Hypothesis's text never has one.
MODELS = (None, MODEL, MODEL, MODEL, "\ud800-model")
cases_run: Counter[str] = Counter()
statuses: Counter[int] = Counter()


@dataclass
class Fuzz:
    """The served schema, ids of real objects to aim path parameters at, and the engine's restarts so far."""

    target: Target
    schema: schemathesis.BaseSchema
    session: requests.Session
    ids: dict[str, str]
    restarts: int = 0

    def operation(self, name: str) -> APIOperation:
        method, path = name.split(" ", 1)
        operation: APIOperation = self.schema[path][method]
        return operation


def seed(target: Target) -> dict[str, str]:
    """A batch input file, a batch and a cache, so that path parameters sometimes name something real."""
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}}
    upload = target.http.post("/v1/files", data={"purpose": "batch"},
                              files={"file": ("in.jsonl", json.dumps(line).encode() + b"\n")})
    assert upload.status_code == 200, upload.text
    file_id = upload.json()["id"]
    batch = target.http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"})
    assert batch.status_code == 200, batch.text
    cache = target.http.post("/v1/caches", json={"model": MODEL, "prompt": "You are terse.", "ttl_seconds": 600})
    assert cache.status_code == 200, cache.text
    return {"file_id": file_id, "batch_id": batch.json()["id"], "cache_id": cache.json()["id"], "model_id": MODEL}


@pytest.fixture(scope="module")
def fuzz(target: Target) -> Iterator[Fuzz]:
    schema = schemathesis.openapi.from_url(f"{target.url}/openapi.json")
    with requests.Session() as session:
        yield Fuzz(target, schema, session, seed(target))


def tame(case: Case, model: str | None, ids: dict[str, str]) -> Case:
    """Cap what makes generation expensive (no max_tokens means the rest of the context: seconds a case); unless
    `model` is None, name it (in a body that has a `model`) and aim path parameters at the seeded objects."""
    body = case.body
    if isinstance(body, dict):
        if ("messages" in body or "prompt" in body) and body.get("max_tokens") is None \
                and body.get("max_completion_tokens") is None:
            body["max_tokens"] = CAPS["max_tokens"]
        for field, cap in CAPS.items():  # 1032.0 is an integer to pydantic too
            value = body.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > cap:
                body[field] = cap
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            body["prompt"] = prompt[:MAX_PROMPTS]
        if model is not None and "model" in body:
            body["model"] = model
    if model is not None and case.path_parameters:
        case.path_parameters = {name: ids.get(name, value) for name, value in case.path_parameters.items()}
    return case


def strategy(operation: APIOperation, ids: dict[str, str]) -> st.SearchStrategy[Case]:
    """Schema-valid and schema-breaking cases of `operation`, tamed."""
    modes = [operation.as_strategy(generation_mode=mode) for mode in GenerationMode]
    return st.builds(lambda case, model: tame(case, model, ids), st.one_of(modes), st.sampled_from(MODELS))


def check_error_shape(response: schemathesis.Response, sent: str) -> None:
    """A 4xx body is `{"error": {"message": str, "type": str, "param": str|null, "code": str|null}}`."""
    try:
        body = json.loads(response.content)
    except ValueError:
        pytest.fail(f"{response.status_code} without a JSON body: {response.text[:2000]}\n{sent}")
    error = body.get("error") if isinstance(body, dict) and set(body) == {"error"} else None
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, f"{body}\n{sent}"
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str), f"{body}\n{sent}"
    assert all(error[key] is None or isinstance(error[key], str) for key in ("param", "code")), f"{body}\n{sent}"


def check_engine(fuzz: Fuzz, sent: str) -> None:
    """The server lives and its engine has not restarted since the last case."""
    assert fuzz.target.server.process.poll() is None, f"the server process died after\n{sent}"
    health = fuzz.session.get(f"{fuzz.target.url}/health", timeout=REQUEST_TIMEOUT_S)
    restarts = health.json()["models"][MODEL]["restarts"]
    crashed, fuzz.restarts = restarts > fuzz.restarts, restarts
    assert not crashed and health.status_code == 200, f"the engine restarted: {health.text}\n{sent}"


def repro(case: Case) -> str:
    """The request, for a failure's message (schemathesis's curl hides fields named like secrets: max_tokens)."""
    body = case.body if isinstance(case.body, (dict, list, str, int, float, bool, type(None))) else repr(case.body)
    return f"{case.method} {case.formatted_path} query={case.query} body={json.dumps(body)[:4000]}"


def send(fuzz: Fuzz, case: Case) -> None:
    """One case through every oracle."""
    sent = repro(case)
    try:
        response = case.call(base_url=fuzz.target.url, session=fuzz.session, timeout=REQUEST_TIMEOUT_S)
    except requests.Timeout:
        pytest.fail(f"no answer in {REQUEST_TIMEOUT_S} s:\n{sent}")
    statuses[response.status_code] += 1
    assert response.status_code < 500, f"{response.status_code}: {response.text[:2000]}\n{sent}"
    if 400 <= response.status_code < 500:
        check_error_shape(response, sent)
    check_engine(fuzz, sent)


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_fuzz(fuzz: Fuzz, name: str) -> None:
    operation = fuzz.operation(name)

    # No shrinking: a case can take seconds, and a failure's message already carries the request.
    @settings(max_examples=OPERATIONS[name], deadline=None, derandomize=True, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(strategy(operation, fuzz.ids))
    def run(case: Case) -> None:
        cases_run[name] += 1
        send(fuzz, case)

    run()


def test_every_operation_is_fuzzed(fuzz: Fuzz) -> None:
    paths = fuzz.schema.raw_schema["paths"]
    assert {f"{method.upper()} {path}" for path, item in paths.items() for method in item} == set(OPERATIONS)


def test_the_server_survived_and_enough_cases_ran(fuzz: Fuzz) -> None:
    health = fuzz.target.http.get("/health")
    assert fuzz.target.alive() and health.status_code == 200, health.text
    assert health.json()["models"][MODEL]["restarts"] == 0
    if set(cases_run) == set(OPERATIONS):  # every operation ran (none was deselected)
        assert sum(cases_run.values()) >= MIN_CASES, cases_run
        assert statuses[200] >= MIN_CASES // 10, statuses  # taming works: many cases reach the engine
