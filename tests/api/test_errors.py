"""Every error case answers in OpenAI's shape with the right status; nothing reaches a 500."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from tests.api.conftest import Server

MODEL = "smollm2-135m"
MESSAGES = [{"role": "user", "content": "Hello"}]


def post(server: Server, path: str, body: object | str, key: str | None = None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    content = body if isinstance(body, str) else None
    return httpx.post(f"{server.url}{path}", content=content, json=None if content else body, headers=headers,
                      timeout=60)


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    return error  # type: ignore[no-any-return]


def test_malformed_json_is_400(server: Server) -> None:
    assert_error(post(server, "/v1/chat/completions", "{not json"), 400)
    assert_error(post(server, "/v1/completions", "[1, 2"), 400)


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", "hot"), ("temperature", 3.5), ("n", 0), ("max_tokens", -1), ("top_p", 0),
    ("stop", ["a", "b", "c", "d", "e"]), ("messages", []), ("messages", "hi"), ("stream", "yes"),
    ("logit_bias", {"x": 1}), ("logit_bias", {"999999": 1}), ("presence_penalty", 5),
    ("top_logprobs", 3), ("response_format", {"type": "xml"}), ("tools", [{"type": "function"}]),
])
def test_wrong_values_are_400_naming_the_param(server: Server, field: str, value: object) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2, field: value}
    error = assert_error(post(server, "/v1/chat/completions", body), 400)
    assert error["param"] is not None and str(error["param"]).split(".")[0] == field


def test_unknown_fields_are_ignored(server: Server) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2, "some_future_field": {"x": 1}}
    assert post(server, "/v1/chat/completions", body).status_code == 200


def test_bad_completion_prompts_are_400(server: Server) -> None:
    for prompt in ["", [], [-5], [[1, 2], "x"]]:
        response = post(server, "/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": 2})
        assert_error(response, 400)
    assert_error(post(server, "/v1/completions", {"model": MODEL, "prompt": "x", "suffix": "y"}), 400, "suffix")


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-5", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"


def test_prompt_longer_than_context_is_400_naming_the_limit(server: Server, client: openai.OpenAI) -> None:
    long_text = "word " * 5000
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": long_text}],
                                       max_tokens=10)
    assert "4096" in str(info.value) and info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=5000)


def test_unknown_route_and_method_keep_the_shape(server: Server) -> None:
    assert_error(httpx.get(f"{server.url}/v1/nothing-here"), 404)
    assert_error(httpx.get(f"{server.url}/v1/chat/completions"), 405)


def test_missing_or_wrong_key_is_401(guarded: Server) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2}
    assert_error(post(guarded, "/v1/chat/completions", body), 401)
    assert_error(post(guarded, "/v1/chat/completions", body, key="wrong"), 401)
    assert post(guarded, "/v1/chat/completions", body, key="key-two").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        guarded.client("nope").models.list()
    assert httpx.get(f"{guarded.url}/health").status_code == 200


def test_full_queue_is_429_with_retry_after(guarded: Server) -> None:
    # two sequences run, two wait: the fifth request finds the queue full
    body = {"model": MODEL, "prompt": "Count slowly:", "max_tokens": 300, "stream": True,
            "ignore_eos": True}
    stop = threading.Event()

    def hold() -> None:
        with httpx.stream("POST", f"{guarded.url}/v1/completions", json=body,
                          headers={"authorization": "Bearer key-one"}, timeout=60) as response:
            for _ in response.iter_lines():
                if stop.is_set():
                    break

    holders = [threading.Thread(target=hold) for _ in range(4)]
    for thread in holders:
        thread.start()
        time.sleep(0.3)
    try:
        response = post(guarded, "/v1/completions", {**body, "stream": True}, key="key-one")
        assert_error(response, 429)
        assert int(response.headers["retry-after"]) >= 1
    finally:
        stop.set()
        for thread in holders:
            thread.join(timeout=60)


def test_client_disconnect_frees_the_sequence(server: Server) -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 2000, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as response:
        for count, _ in enumerate(response.iter_lines()):
            if count > 3:
                break
    assert_running_drops_to_zero(server)
    # non-streaming too: the request is cancelled when the client goes away
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json={**body, "stream": False}, timeout=1.0)
    assert_running_drops_to_zero(server)


def assert_running_drops_to_zero(server: Server) -> None:
    deadline = time.monotonic() + 10
    while server.metric("minimill_running_sequences") > 0:
        assert time.monotonic() < deadline, "the aborted sequence kept running"
        time.sleep(0.1)


ODD_BODIES: list[object] = [
    [], 42, "just a string", {}, {"model": MODEL},
    '{"model": "smollm2-135m", "messages": [{"role": "user", "content": "\\ud800 lone"}], "max_tokens": 2}',
    {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]},
    {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
    {"model": MODEL, "messages": MESSAGES, "max_tokens": 10**12},
    {"model": MODEL, "messages": MESSAGES, "max_tokens": 2, "seed": 2**70},
    {"model": MODEL, "messages": MESSAGES, "max_tokens": 2, "seed": -5},
    {"model": MODEL, "messages": MESSAGES, "max_tokens": 2,
     "response_format": {"type": "json_schema",
                         "json_schema": {"name": "x", "schema": {"type": "object", "properties": 5}}}},
    {"model": MODEL, "messages": MESSAGES, "max_tokens": 2,
     "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}}},
    {"model": MODEL, "messages": MESSAGES, "max_tokens": 2, "response_format": {"type": "json_schema"}},
    {"model": MODEL, "messages": MESSAGES, "max_tokens": 2, "stop": [""]},
    {"model": MODEL, "messages": MESSAGES, "max_tokens": 2, "n": 2, "stream": True, "logprobs": True},
    {"model": MODEL, "messages": MESSAGES, "max_tokens": 2, "logit_bias": {"5": 1000}},
    {"model": 7, "messages": MESSAGES},
]


@pytest.mark.parametrize("body", ODD_BODIES, ids=range(len(ODD_BODIES)))
def test_odd_inputs_never_cause_a_server_error(server: Server, body: object) -> None:
    response = post(server, "/v1/chat/completions", body)
    assert response.status_code in (200, 400, 404), response.text
    if response.status_code != 200:
        assert_error(response, response.status_code)


@pytest.mark.parametrize("prompt", [[[]], [[1, 2], []], [""], ["a", ""]])
def test_empty_prompts_in_a_batch_are_400(server: Server, prompt: object) -> None:
    assert_error(post(server, "/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": 2}), 400)
