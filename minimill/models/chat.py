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
    """One message of a conversation, content already flattened to text."""

    role: str
    content: str


def _raise(message: str) -> None:
    raise InvalidRequest(f"chat template rejected the messages: {message}", param="messages")


class ChatTemplate:
    """A compiled chat template with the model's BOS/EOS text."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self._template = env.from_string(source)
        self._bos_token = bos_token
        self._eos_token = eos_token

    @classmethod
    def for_model(cls, template: str | None, architecture: str | None, *, bos: str, eos: str) -> ChatTemplate:
        """The GGUF's template if it has one, else a known one for its architecture, else ChatML."""
        source = template or TEMPLATES_BY_ARCHITECTURE.get(architecture or "", CHATML_TEMPLATE)
        return cls(source, bos_token=bos, eos_token=eos)

    def render(self, messages: Sequence[ChatMessage], open_turn: bool = True) -> str:
        """The prompt text for `messages`, ending with the assistant's turn opener if `open_turn`."""
        if not messages:
            raise InvalidRequest("messages must contain at least one message", param="messages")
        try:
            return self._template.render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=open_turn,
                bos_token=self._bos_token,
                eos_token=self._eos_token,
            )
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"chat template failed: {exc}", param="messages") from exc
