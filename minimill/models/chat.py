"""Chat templates: the GGUF's own Jinja template, or a known one for architectures that ship none.

Rendering runs in Jinja's immutable sandbox: templates come from model files, not from us.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from minimill.errors import InvalidRequest

# Gemma 3's GGUF in the bundled package carries no template; this is Gemma 3's published format.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TEMPLATES_BY_ARCHITECTURE = {"gemma3": GEMMA3_TEMPLATE}


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation, content already flattened to text. An assistant message may carry
    the calls it made (OpenAI's shape, arguments as a JSON object, as templates expect them); a tool
    message names the call it answers."""

    role: str
    content: str
    tool_calls: tuple[dict[str, object], ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def as_dict(self) -> dict[str, object]:
        """What a Jinja chat template reads."""
        out: dict[str, object] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = list(self.tool_calls)
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


def _raise(message: str) -> None:
    raise InvalidRequest(f"chat template rejected the messages: {message}", param="messages")


class ChatTemplate:
    """A compiled chat template with the model's BOS/EOS text."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self.source = source
        self._template = env.from_string(source)
        self._bos_token = bos_token
        self._eos_token = eos_token

    @classmethod
    def for_model(cls, template: str | None, architecture: str | None, *, bos: str, eos: str) -> ChatTemplate:
        """The GGUF's template if it has one, else a known one for its architecture, else ChatML."""
        source = template or TEMPLATES_BY_ARCHITECTURE.get(architecture or "", CHATML_TEMPLATE)
        return cls(source, bos_token=bos, eos_token=eos)

    @property
    def renders_tools(self) -> bool:
        """Whether the template renders `tools` and writes calls in the `<tool_call>` (Hermes) format, the
        one minimill parses."""
        return "tools" in self.source and "<tool_call>" in self.source

    def render(self, messages: Sequence[ChatMessage], open_turn: bool = True,
               tools: Sequence[dict[str, object]] = ()) -> str:
        """The prompt text for `messages` (and the `tools` they may call, OpenAI's shape), ending with the
        assistant's turn opener if `open_turn`."""
        if not messages:
            raise InvalidRequest("messages must contain at least one message", param="messages")
        extra = {"tools": list(tools)} if tools else {}
        try:
            return self._template.render(
                messages=[m.as_dict() for m in messages],
                add_generation_prompt=open_turn,
                bos_token=self._bos_token,
                eos_token=self._eos_token,
                **extra,
            )
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"chat template failed: {exc}", param="messages") from exc
