"""Tool calling without a model: finding calls in answers (whole and streamed), the calls' grammar, and the
request's tool use."""

from __future__ import annotations

import json

import pytest
import regex

from minimill.engine.llama import json_schema_to_grammar
from minimill.errors import InvalidRequest
from minimill.serving.tools import CallStream, Function, ToolUse, calls_grammar, parse, tool_use

NAMES = ("get_weather", "add")
WEATHER = '{"name": "get_weather", "arguments": {"city": "Lisbon"}}'
ADD = '{"name": "add", "arguments": {"a": 2, "b": 3}}'

ANSWERS = {
    "tagged": (f"<tool_call>\n{WEATHER}\n</tool_call>", "", [("get_weather", {"city": "Lisbon"})]),
    "two tagged": (f"<tool_call>\n{WEATHER}\n</tool_call>\n<tool_call>\n{ADD}\n</tool_call>", "",
                   [("get_weather", {"city": "Lisbon"}), ("add", {"a": 2, "b": 3})]),
    "text first": (f"Let me check.\n<tool_call>\n{WEATHER}\n</tool_call>", "Let me check.",
                   [("get_weather", {"city": "Lisbon"})]),
    "fenced": ('```json\n{\n  "name": "add",\n  "arguments": {"a": 2, "b": 3}\n}\n```', "",
               [("add", {"a": 2, "b": 3})]),
    "bare": (ADD, "", [("add", {"a": 2, "b": 3})]),
    "unclosed": (f"<tool_call>\n{WEATHER}", "", [("get_weather", {"city": "Lisbon"})]),
    "plain text": ("It is sunny in {Lisbon} <b>today</b>.", "It is sunny in {Lisbon} <b>today</b>.", []),
    "unknown function": ('{"name": "launch", "arguments": {}}', '{"name": "launch", "arguments": {}}', []),
    "json, not a call": ('```json\n{"city": "Lisbon"}\n```', '```json\n{"city": "Lisbon"}\n```', []),
}


def calls_of(calls: list) -> list[tuple[str, object]]:  # type: ignore[type-arg]
    return [(c.name, json.loads(c.arguments)) for c in calls]


@pytest.mark.parametrize("case", ANSWERS, ids=str)
def test_parse_finds_calls_in_every_form_the_models_write(case: str) -> None:
    text, content, calls = ANSWERS[case]
    got_content, got_calls = parse(text, NAMES)
    assert (got_content, calls_of(got_calls)) == (content, calls)
    assert len({c.id for c in got_calls}) == len(got_calls) and all(c.id.startswith("call_") for c in got_calls)


def test_a_block_that_is_not_a_call_after_a_call_stays_as_text_whole_and_streamed() -> None:
    text = f"<tool_call>\n{WEATHER}\n</tool_call>\n<tool_call>\nnot json\n</tool_call>"
    content, calls = parse(text, NAMES)
    assert calls_of(calls) == [("get_weather", {"city": "Lisbon"})] and content == "<tool_call>\nnot json\n</tool_call>"
    cut = f"<tool_call>\n{WEATHER}\n</tool_call>\n<tool_call>\n" + ADD[:12]  # max_tokens cut the second call
    content, calls = parse(cut, NAMES)
    assert calls_of(calls) == [("get_weather", {"city": "Lisbon"})] and content.startswith("<tool_call>")


def test_a_closing_tag_inside_the_arguments_does_not_end_the_call() -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "</tool_call>"}}\n</tool_call>'
    assert parse(text, NAMES)[1][0].arguments == '{"city": "</tool_call>"}'


def test_a_long_fenced_opener_is_held_back_whole() -> None:
    name = "f" * 64
    text = "Sure:\n```json\n\n" + " " * 20 + '{"name": "' + name + '", "arguments": {}}\n```'
    stream = CallStream((name,))
    shown = "".join(stream.feed(text[i:i + 2])[0] for i in range(0, len(text), 2)) + stream.finish()[0]
    assert shown == "Sure:"


@pytest.mark.parametrize("case", ANSWERS, ids=str)
@pytest.mark.parametrize("size", [1, 3, 7])
def test_streamed_in_pieces_equals_whole(case: str, size: int) -> None:
    text, content, calls = ANSWERS[case]
    if case == "json, not a call":
        return  # no opener (not a function name): plain text either way, covered by the whole-answer test
    stream, shown, made = CallStream(NAMES), "", []
    for start in range(0, len(text), size):
        more, done = stream.feed(text[start:start + size])
        shown += more
        made += done
    rest, last = stream.finish()
    assert (shown + rest, calls_of(made + last)) == (content, calls)


def test_a_possible_opener_is_held_back_only_until_it_is_not_one() -> None:
    stream = CallStream(NAMES)
    assert stream.feed("Hello <tool") == ("Hello", [])  # the space too: before a call it would be dropped
    assert stream.feed("s>") == (" <tools>", [])  # not `<tool_call>`: released
    assert stream.feed(' and {"na') == (" and", [])
    assert stream.feed('me": "x"}') == (' {"name": "x"}', [])  # not a function's name
    assert stream.feed(" done") == (" done", [])
    assert stream.finish() == ("", []) and not stream.called


def test_calls_stream_out_as_each_block_closes() -> None:
    stream = CallStream(NAMES)
    assert stream.feed(f"<tool_call>\n{WEATHER}\n</tool_") == ("", [])
    content, calls = stream.feed("call>\n<tool_call>\n" + ADD[:10])
    assert content == "" and calls_of(calls) == [("get_weather", {"city": "Lisbon"})]
    content, calls = stream.feed(ADD[10:] + "\n</tool_call>")
    assert calls_of(calls) == [("add", {"a": 2, "b": 3})]
    assert stream.finish() == ("", [])


WEATHER_FN = Function("get_weather", "Weather in a city",
                      {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
ADD_FN = Function("add", "", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                              "required": ["a", "b"]})


def test_grammar_offers_tags_when_forced_and_every_form_when_the_model_chooses() -> None:
    forced = calls_grammar(ToolUse((WEATHER_FN, ADD_FN), "required", parallel=False), json_schema_to_grammar)
    root = forced.splitlines()[0]
    assert root.startswith('root ::= "<tool_call>\\n" tool-call "\\n</tool_call>"') and "```" not in root
    assert "*" not in root  # one call only
    assert forced.count("tool-call ::=") == 1 and "\nroot ::=" not in forced
    assert '"\\"get_weather\\""' in forced and '"\\"add\\""' in forced
    named = calls_grammar(ToolUse((WEATHER_FN, ADD_FN), "auto", parallel=True, named="add"), json_schema_to_grammar)
    assert '"\\"get_weather\\""' not in named and '"\\"add\\""' in named and ")*" in named.splitlines()[0]
    auto = ToolUse((WEATHER_FN, ADD_FN), "auto", parallel=True)
    chooses = calls_grammar(auto, json_schema_to_grammar).splitlines()[0]
    assert '"```json"' in chooses and chooses.endswith("| tool-call )") and chooses.startswith("root ::= [ \\t\\n]*")
    trigger = auto.trigger()
    assert trigger is not None and regex.search(trigger, 'Sure. {"name": "add"') is not None
    assert regex.search(trigger, '{"name": "subtract"') is None and regex.search(trigger, "<tool_call>")
    assert ToolUse((WEATHER_FN,), "required").trigger() is None


def test_tool_use_refuses_what_cannot_be_called() -> None:
    assert tool_use([], "auto", True) is None
    with pytest.raises(InvalidRequest, match="requires tools"):
        tool_use([], "required", True)
    with pytest.raises(InvalidRequest, match="not in tools"):
        tool_use([WEATHER_FN], "auto", True, named="add")
    with pytest.raises(InvalidRequest, match="distinct"):
        tool_use([WEATHER_FN, WEATHER_FN], "auto", True)
    assert tool_use([WEATHER_FN, ADD_FN], "auto", True, named="add").names == ("add",)  # type: ignore[union-attr]
    none_fn = Function("none")  # a function may be called "none": naming it is not tool_choice "none"
    use = tool_use([none_fn, ADD_FN], "auto", True, named="none")
    assert use is not None and use.forced and use.names == ("none",)
