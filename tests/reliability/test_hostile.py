"""Hostile requests, each once a way to kill or stall the server: every one is a 4xx in OpenAI's shape, and
the same process answers afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import Target

MODEL = "smollm2-135m"


def chat(content: str = "Say hi.", **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4, "temperature": 0,
            **fields}


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def assert_refused(response: httpx.Response, status: int = 400, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


HOSTILE_CHATS: dict[str, dict[str, Any]] = {
    # The schema became a grammar nested 200,000 deep: SIGSEGV in llama.cpp's grammar code.
    "max_length_200k": chat(response_format=schema_format({"type": "string", "maxLength": 200000})),
    "pattern_repeat_200k": chat(response_format=schema_format({"type": "string", "pattern": "^a{0,200000}$"})),
    "schema_nested_deep": chat(response_format=schema_format(
        {"type": "object", "properties": {"a": eval("{'type': 'array', 'items': " * 60 + "{}" + "}" * 60)}})),
    "top_k_overflows_int32": chat(top_k=10**12, temperature=1.0, seed=3),
    "logit_bias_too_many": chat(logit_bias={str(i): 1 for i in range(5000)}),
    "stop_too_long": chat(stop=["x" * 5000]),
    "seed_huge": chat(seed=10**40),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_CHATS))
def test_hostile_chat_is_a_400_and_the_server_lives(target: Target, name: str) -> None:
    body = HOSTILE_CHATS[name]
    response = target.http.post("/v1/chat/completions", json=body)
    if name in ("seed_huge", "top_k_overflows_int32"):  # any integer is fine: a seed is reduced, a top_k clamped
        assert response.status_code == 200, response.text
    else:
        assert_refused(response)
    assert target.alive()


def test_unsatisfiable_pattern_is_refused_not_aborted(target: Target) -> None:
    # A grammar no token can satisfy: llama.cpp aborted the process when sampling from it.
    response = target.http.post("/v1/chat/completions",
                                json=chat(response_format=schema_format({"type": "string", "pattern": "^\\u0000$"})))
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["error"]["param"] == "response_format"
    assert target.alive()


def test_out_of_vocabulary_echo_is_a_400(target: Target) -> None:
    # The prompt was detokenized (for echo) before its ids were checked: SIGABRT.
    response = target.http.post("/v1/completions", json={"model": MODEL, "prompt": [999999], "echo": True,
                                                          "max_tokens": 1})
    assert_refused(response, param="prompt")
    response = target.http.post("/v1/completions", json={"model": MODEL, "prompt": [[1, 2], [-5]], "echo": True,
                                                          "max_tokens": 1})
    assert_refused(response, param="prompt")
    assert target.alive()


def test_100k_messages_are_refused_while_health_answers(target: Target) -> None:
    body = {"model": MODEL, "max_tokens": 1,
            "messages": [{"role": "user", "content": "word"} for _ in range(100_000)]}
    outcome: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: outcome.append(target.http.post("/v1/chat/completions", json=body)))
    sender.start()
    slowest = 0.0
    while sender.is_alive():
        started = time.monotonic()
        assert target.http.get("/health", timeout=5).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    sender.join()
    assert_refused(outcome[0], param="messages")
    assert slowest < 2.0


def test_a_prompt_too_long_for_the_context_is_refused_by_its_length(target: Target) -> None:
    started = time.monotonic()
    response = target.http.post("/v1/chat/completions", json=chat("word " * 2_000_000))
    error = assert_refused(response)
    assert error["code"] == "context_length_exceeded"
    assert time.monotonic() - started < 10


def test_an_oversized_body_is_a_413_before_it_is_read(target: Target) -> None:
    big = b'{"model": "x", "messages": [' + b" " * (17 << 20) + b"]}"
    response = target.http.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"})
    assert_refused(response, status=413)

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        yield b'{"model": "x", "messages": ['
        for _ in range(20):
            yield b" " * (1 << 20)
        yield b"]}"

    response = target.http.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert_refused(response, status=413)
    assert target.alive()


def test_admin_keys_alone_still_close_the_server(keyed: Target) -> None:
    assert_refused(keyed.http.post("/v1/chat/completions", json=chat()), status=401)
    ok = keyed.http.post("/v1/chat/completions", json=chat(), headers={"authorization": "Bearer admin-key"})
    assert ok.status_code == 200, ok.text


def test_an_unauthenticated_body_is_not_parsed(keyed: Target) -> None:
    # Broken JSON, no key: the key is checked first (401), the body never read (so never a 400 about its JSON).
    response = keyed.http.post("/v1/chat/completions", content=b"{" * 100_000,
                               headers={"content-type": "application/json"})
    assert_refused(response, status=401)
    assert keyed.http.get("/v1/prices").status_code == 200  # public


LACKING = [("functions", [{"name": "f", "parameters": {}}]),
           ("tools", [{"type": "function", "function": {"name": "f"}}]),
           ("audio", {"voice": "alloy", "format": "wav"}), ("modalities", ["text", "audio"]),
           ("web_search_options", {"search_context_size": "low"})]  # prediction is served since issue 16


@pytest.mark.parametrize("field,value", LACKING)
def test_a_known_feature_minimill_lacks_is_a_400_naming_it(target: Target, field: str, value: Any) -> None:
    assert_refused(target.http.post("/v1/chat/completions", json=chat(**{field: value})), param=field)


@pytest.mark.parametrize("field,value", [("tool_choice", "required"), ("tool_choice", "auto"),
                                         ("function_call", "auto"), ("function_call", {"name": "f"})])
def test_a_choice_among_no_tools_is_a_400_naming_it(target: Target, field: str, value: Any) -> None:
    assert_refused(target.http.post("/v1/chat/completions", json=chat(**{field: value})), param=field)


def test_unknown_fields_are_still_ignored(target: Target) -> None:
    response = target.http.post("/v1/chat/completions", json=chat(modalities=["text"], some_future_field={"x": 1}))
    assert response.status_code == 200, response.text


def test_a_public_bind_without_keys_refuses_to_start(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "minimill.cli", "serve", "-m", "smollm2-135m", "--host", "0.0.0.0",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode != 0
    assert "without API keys" in done.stdout + done.stderr and "--insecure-no-auth" in done.stdout + done.stderr
