"""Tool calling: what a request's `tools` and `tool_choice` mean for the prompt, the grammar and the answer.

The model's own chat template renders the tools and the calls in the history; the format known here is
the Hermes format of Qwen2.5's template, one block per call:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Lisbon"}}
    </tool_call>

Small models do not always write the tags: they also write the same object in a fenced JSON block, or
bare. Like llama.cpp's server, a call is recognised in all three forms when the model may choose
(`tool_choice: "auto"`), but only by a function name from the request. The arguments are constrained by a
grammar built from the functions' JSON schemas: from the first token when a call is required (`required`
or a named function; then always the tagged form), and from the moment the model opens a call when it
chooses (a lazy grammar). So every call parses and validates against its function's schema.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import regex

from minimill.errors import InvalidRequest

OPEN_TAG, CLOSE_TAG, FENCE = "<tool_call>", "</tool_call>", "```json"


@dataclass(frozen=True, slots=True)
class Function:
    """A function the model may call: its name, description and JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, object] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool = False

    def as_tool(self) -> dict[str, object]:
        """OpenAI's tool shape, as chat templates expect it."""
        function: dict[str, object] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


Choice = Literal["auto", "required", "none"]


@dataclass(frozen=True, slots=True)
class ToolUse:
    """The tools of one request and how the model may use them: `choice`, or the one function `named`."""

    functions: tuple[Function, ...]
    choice: Choice = "auto"
    parallel: bool = True
    named: str | None = None

    @property
    def forced(self) -> bool:
        """Whether the answer must be calls (and so the grammar applies from the first token)."""
        return self.named is not None or self.choice == "required"

    def callable(self) -> tuple[Function, ...]:
        """The functions the model may call now (a named choice: that one only)."""
        if self.named is None:
            return self.functions
        return tuple(f for f in self.functions if f.name == self.named)

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the callable functions."""
        return tuple(f.name for f in self.callable())

    def trigger(self) -> str | None:
        """Where a call the model chose to make starts (a regex over its output; the grammar applies from the
        token the match starts in); None when a call is forced from the first token."""
        return None if self.forced else "|".join(_openers(self.names))


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the model made: `arguments` is the JSON text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str


def tool_use(functions: Sequence[Function], choice: Choice, parallel: bool, named: str | None = None) -> ToolUse | None:
    """The request's tool use (None when it names no tools); 400 for a named function that is not listed
    or two functions of one name."""
    if not functions:
        if choice not in ("auto", "none") or named is not None:
            raise InvalidRequest("tool_choice requires tools", param="tool_choice")
        return None
    names = [f.name for f in functions]
    if len(set(names)) != len(names):
        raise InvalidRequest("tools must have distinct function names", param="tools")
    if named is not None and named not in names:
        raise InvalidRequest(f"tool_choice names the function {named!r}, which is not in tools",
                             param="tool_choice")
    return ToolUse(tuple(functions), choice, parallel, named)


def call_schema(functions: Sequence[Function]) -> dict[str, object]:
    """The JSON schema of one call's object: `{"name": <one of them>, "arguments": <its schema>}`."""
    alternatives = [{"type": "object", "properties": {"name": {"const": f.name}, "arguments": f.parameters},
                     "required": ["name", "arguments"], "additionalProperties": False} for f in functions]
    return alternatives[0] if len(alternatives) == 1 else {"oneOf": alternatives}


def calls_grammar(use: ToolUse, schema_grammar: Callable[[dict[str, object]], str]) -> str:
    """GBNF for the calls: tagged blocks (one, or one or more when parallel), each an object `call_schema`
    accepts; when the model may choose, also one call fenced or bare. `schema_grammar` turns a JSON schema
    into checked GBNF whose start rule is root."""
    one = schema_grammar(call_schema(use.callable()))
    renamed = re.sub(r"^root ::=", "tool-call ::=", one, count=1, flags=re.MULTILINE)
    # The model's own layout (a newline and indentation inside the object), as llama.cpp's server allows it.
    renamed = re.sub(r"^space ::= .*$", r'space ::= | " " | "\\n"{1,2} [ \\t]{0,20}', renamed, count=1,
                     flags=re.MULTILINE)
    block = f'{json.dumps(OPEN_TAG + chr(10))} tool-call {json.dumps(chr(10) + CLOSE_TAG)}'
    root = f'{block} ( "\\n" {block} )*' if use.parallel else block
    if not use.forced:  # from the token the opener starts in, which may carry whitespace before it
        root = f'[ \\t\\n]* ( ( {root} ) | {json.dumps(FENCE)} space tool-call space "```" | tool-call )'
    return f"root ::= {root}\n{renamed}"


def new_call_id() -> str:
    """An id for one call, in OpenAI's style."""
    return f"call_{secrets.token_hex(12)}"


def _openers(names: Sequence[str]) -> tuple[str, str, str]:
    """Regexes of the three ways a call starts: the tag, a fence, or a bare object naming a function."""
    named = r'\{\s*"name"\s*:\s*"(?:' + "|".join(re.escape(n) for n in names) + ')"'
    return re.escape(OPEN_TAG), re.escape(FENCE) + r"\s*" + named, named


def _call(text: str, names: Sequence[str]) -> ToolCall | None:
    """One block's JSON as a call to one of `names`, or None if it is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("name") not in names or not isinstance(value.get("arguments"), dict):
        return None
    return ToolCall(new_call_id(), value["name"], json.dumps(value["arguments"], ensure_ascii=False))


def _block(text: str, *, final: bool) -> tuple[str, int] | None:
    """The JSON text of the call block at the start of `text` (leading whitespace allowed) and where the
    block ends; None if no block starts there, or (unless `final`) it has not closed yet."""
    start = len(text) - len(text.lstrip())
    rest = text[start:]
    for opener, closer in ((OPEN_TAG, CLOSE_TAG), (FENCE, "```")):
        if rest.startswith(opener):
            inner = len(opener) + len(rest[len(opener):]) - len(rest[len(opener):].lstrip())
            try:  # the object first: its strings may hold the closer
                _, size = json.JSONDecoder().raw_decode(rest, inner)
            except ValueError:
                size = -1
            if size > 0 and rest[size:].lstrip().startswith(closer):
                end = size + len(rest[size:]) - len(rest[size:].lstrip())
                return rest[inner:size], start + end + len(closer)
            end = rest.find(closer, len(opener))
            if end < 0:
                return (rest[len(opener):].strip(), len(text)) if final and len(rest) > len(opener) else None
            return rest[len(opener):end].strip(), start + end + len(closer)
    if rest.startswith("{"):
        try:
            _, size = json.JSONDecoder().raw_decode(rest)
        except ValueError:
            return (rest, len(text)) if final else None
        return rest[:size], start + size
    return None


def parse(text: str, names: Sequence[str]) -> tuple[str, list[ToolCall]]:
    """A whole answer split into its text (before the first call, and any block that is not a call) and its
    calls to `names`: exactly what streaming the same text through `CallStream` shows."""
    stream = CallStream(names)
    content, calls = stream.feed(text)
    rest, last = stream.finish()
    return content + rest, calls + last


class CallStream:
    """Splits one choice's streamed text into content fragments and completed calls.

    Text that could be the start of a call is held back until it is known not to be; once a call opens,
    nothing more is content and each call is released when its block closes (or at the end).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._opener = regex.compile("|".join(_openers(self.names)))
        # an opener may be a fence, whitespace and the longest name: hold back that much undecided text
        self._window = 128 + max((len(n) for n in self.names), default=0)
        self._pending = ""
        self.called = False  # the model opened a call

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        """New content to show, and calls completed by `text`."""
        self._pending += text
        if self.called:
            return self._complete(final=False)
        opened = self._opener.search(self._pending)
        if opened is None:  # trailing whitespace waits too: before a call it is dropped, as `parse` drops it
            cut = len(self._pending[:self._undecided_from(self._pending)].rstrip())
            out, self._pending = self._pending[:cut], self._pending[cut:]
            return out, []
        out, self._pending, self.called = self._pending[:opened.start()].rstrip(), self._pending[opened.start():], True
        more, calls = self._complete(final=False)
        return out + more, calls

    def finish(self) -> tuple[str, list[ToolCall]]:
        """What is left at the end of the choice: held-back text, or a last call whose block did not close."""
        if not self.called:
            out, self._pending = self._pending, ""
            return out, []
        return self._complete(final=True)

    def _complete(self, *, final: bool) -> tuple[str, list[ToolCall]]:
        """Calls whose blocks are closed (everything left, at the end), consumed from the pending text; a
        block that is not a call, and at the end anything that is no block, comes back as text."""
        text, calls = "", []
        while self._pending.strip() and (found := _block(self._pending, final=final)) is not None:
            body, end = found
            call = _call(body, self.names)
            if call is None:
                text += self._pending[:end].lstrip()
            else:
                calls.append(call)
            self._pending = self._pending[end:]
        if final:
            if self._pending.strip():
                text += self._pending
            self._pending = ""
        return text, calls

    def _undecided_from(self, text: str) -> int:
        """Where the suffix of `text` that could still become a call's opener starts (len(text) if none)."""
        for start in range(max(0, len(text) - self._window), len(text)):
            if self._opener.fullmatch(text, start, partial=True) is not None:
                return start
        return len(text)
