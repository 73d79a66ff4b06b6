"""Tool calling through the official `openai` client on qwen2.5-coder-0.5b (greedy): an agent loop, every
`tool_choice`, parallel calls, streamed calls equal to whole ones, the legacy `functions`, and the 400s for
a template without tools and for content minimill cannot read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest

from tests.api.conftest import Server, serve

QWEN = "qwen2.5-coder-0.5b"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
           "required": ["city"], "additionalProperties": False}
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"],
       "additionalProperties": False}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": ADD}},
]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
SYSTEM = {"role": "system", "content": "You are a helpful assistant. Use the tools when needed, then answer the "
                                       "user in one sentence."}
ASK: list[Any] = [SYSTEM, {"role": "user", "content": "What's the weather in Lisbon?"}]


@pytest.fixture(scope="module")
def tooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("tools"), models=[QWEN, "smollm2-135m"], kv_size=4096, max_seqs=4)


def create(server: Server, **kw: Any) -> Any:
    return server.client().chat.completions.create(**{"model": QWEN, "temperature": 0, "max_tokens": 120, **kw})


def valid(call: Any) -> dict[str, Any]:
    """The call's arguments, checked against its function's schema."""
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, SCHEMAS[call.function.name])
    assert call.id.startswith("call_") and call.type == "function"
    return arguments  # type: ignore[no-any-return]


def test_an_agent_loop_calls_a_tool_then_answers_from_its_result(tooled: Server) -> None:
    first = create(tooled, messages=ASK, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and valid(call)["city"].startswith("Lisbo")
    history = [*ASK, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 21, "sky": "clear"})}]
    again = create(tooled, messages=history, tools=TOOLS)  # the call and its result render through the template
    assert again.choices[0].finish_reason in ("tool_calls", "stop")
    final = create(tooled, messages=history, tools=TOOLS, tool_choice="none")
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.tool_calls is None
    assert "21" in final.choices[0].message.content


def test_required_and_named_choices_always_call_with_valid_arguments(tooled: Server) -> None:
    chat: list[Any] = [{"role": "user", "content": "Hello there!"}]
    required = create(tooled, messages=chat, tools=TOOLS, tool_choice="required")
    assert required.choices[0].finish_reason == "tool_calls"
    assert all(valid(c) is not None for c in required.choices[0].message.tool_calls)
    named = create(tooled, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}})
    (call,) = named.choices[0].message.tool_calls
    assert call.function.name == "add" and set(valid(call)) == {"a", "b"}
    plain = create(tooled, messages=chat, tools=TOOLS)  # the model may answer in words
    assert plain.choices[0].finish_reason == "stop" and plain.choices[0].message.content


def test_parallel_calls_and_one_call_when_parallel_is_off(tooled: Server) -> None:
    both: list[Any] = [{"role": "user", "content": "Get the weather for Lisbon and for Paris (two calls)."}]
    many = create(tooled, messages=both, tools=TOOLS, tool_choice="required", max_tokens=160)
    calls = many.choices[0].message.tool_calls
    assert len(calls) == 2 and len({c.id for c in calls}) == 2
    assert {c.function.name for c in calls} == {"get_weather"}
    assert {valid(c)["city"][:5] for c in calls} == {"Lisbo", "Paris"}
    one = create(tooled, messages=both, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=160)
    assert len(one.choices[0].message.tool_calls) == 1


def test_streamed_calls_reassemble_into_the_whole_answer(tooled: Server) -> None:
    whole = create(tooled, messages=ASK, tools=TOOLS).choices[0]
    calls: dict[int, dict[str, str]] = {}
    finish, content = None, ""
    for chunk in create(tooled, messages=ASK, tools=TOOLS, stream=True):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            content += choice.delta.content or ""
            for part in choice.delta.tool_calls or ():
                entry = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += part.id or ""
                entry["name"] += (part.function.name or "") if part.function else ""
                entry["arguments"] += (part.function.arguments or "") if part.function else ""
    assert finish == whole.finish_reason == "tool_calls" and content == ""
    assert [(c["name"], c["arguments"]) for _, c in sorted(calls.items())] == \
        [(c.function.name, c.function.arguments) for c in whole.message.tool_calls]
    assert all(c["id"].startswith("call_") for c in calls.values())


def test_legacy_functions_map_onto_tools(tooled: Server) -> None:
    reply = create(tooled, messages=ASK, functions=[t["function"] for t in TOOLS],
                   function_call={"name": "get_weather"})
    choice = reply.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    assert choice.message.function_call.name == "get_weather"
    jsonschema.validate(json.loads(choice.message.function_call.arguments), WEATHER)


def refusal(server: Server, **kw: Any) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        create(server, **kw)
    return caught.value


def test_what_cannot_be_done_is_a_400_that_says_why(tooled: Server) -> None:
    smol = refusal(tooled, model="smollm2-135m", messages=ASK, tools=TOOLS)
    assert smol.code == "tools_not_supported" and "chat template has no tool support" in smol.message
    missing = refusal(tooled, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "x"}})
    assert missing.param == "tool_choice"
    picture = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}
    image = refusal(tooled, messages=[{"role": "user", "content": [{"type": "text", "text": "What?"}, picture]}])
    assert image.code == "unsupported_content" and "image input is not supported" in image.message
    audio = refusal(tooled, messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}])
    assert "audio input is not supported" in audio.message
    speak = refusal(tooled, messages=ASK, modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"})
    assert speak.code == "unsupported_parameter"
    bad_history = refusal(tooled, messages=[*ASK, {"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{not json"}}]}])
    assert "not JSON" in bad_history.message
    both = refusal(tooled, messages=ASK, tools=TOOLS, response_format={"type": "json_object"})
    assert both.param == "response_format"
    parts = create(tooled, messages=[{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}],
                   max_tokens=8)
    assert parts.choices[0].message.content


def test_tool_calls_are_the_same_with_prompt_lookup_drafts(tooled: Server) -> None:
    # The tool schemas are in the prompt, so looked-up drafts propose their names and keys; the grammar that
    # constrains a call's arguments samples the drafted positions like any other.
    before = tooled.metric("minimill_spec_drafted_tokens_total")
    for choice in ("auto", "required", {"type": "function", "function": {"name": "add"}}):
        plain = create(tooled, messages=ASK, tools=TOOLS, tool_choice=choice)
        drafted = create(tooled, messages=ASK, tools=TOOLS, tool_choice=choice,
                         extra_body={"speculation": "ngram", "speculation_max_draft": 8})
        assert drafted.choices[0].finish_reason == plain.choices[0].finish_reason
        assert [(c.function.name, c.function.arguments) for c in drafted.choices[0].message.tool_calls or []] == \
            [(c.function.name, c.function.arguments) for c in plain.choices[0].message.tool_calls or []]
        assert drafted.choices[0].message.content == plain.choices[0].message.content
    assert tooled.metric("minimill_spec_drafted_tokens_total") > before


def test_tool_calls_are_the_same_with_a_prediction(tooled: Server) -> None:
    # A prediction of the call, right and then wrong in its arguments: its tokens are drafted through the grammar
    # that constrains the call, and the call comes out as without one.
    for choice in ("required", {"type": "function", "function": {"name": "add"}}):
        plain = create(tooled, messages=ASK, tools=TOOLS, tool_choice=choice)
        call = plain.choices[0].message.tool_calls[0].function
        arguments = json.loads(call.arguments)
        wrong = {key: (value + 1 if isinstance(value, int | float) else value) for key, value in arguments.items()}
        for guess in (arguments, wrong):
            text = json.dumps({"name": call.name, "arguments": guess})
            predicted = create(tooled, messages=ASK, tools=TOOLS, tool_choice=choice,
                               prediction={"type": "content", "content": text})
            calls = predicted.choices[0].message.tool_calls or []
            assert [(c.function.name, c.function.arguments) for c in calls] == [(call.name, call.arguments)]
            assert predicted.choices[0].finish_reason == plain.choices[0].finish_reason
            details = predicted.usage.completion_tokens_details
            assert details.accepted_prediction_tokens + details.rejected_prediction_tokens > 0  # it was drafted
