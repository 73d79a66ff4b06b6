"""Text work on a model's vocabulary: tokenizing, detokenizing, chat templates, JSON grammars.

Shared by the engine core (inside the engine process) and `EngineClient` (in the server, on a vocabulary-only
load): both mix in `TextOps`. Safe from any thread: it touches the vocabulary only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from minimill.engine.llama import JSON_OBJECT_GRAMMAR, LlamaModel, json_schema_to_grammar
from minimill.models.chat import ChatMessage, ChatTemplate


def chat_template_of(model: LlamaModel) -> ChatTemplate:
    """The model's own chat template (or a known one for its architecture), with its BOS and EOS text."""
    return ChatTemplate.for_model(
        model.meta("tokenizer.chat_template"), model.meta("general.architecture"),
        bos=model.special_text(model.bos) if model.bos >= 0 else "",
        eos=model.special_text(model.eos) if model.eos >= 0 else "")


class TextOps:
    """Text helpers over `self.model` and `self.template` (set by the class that mixes this in)."""

    model: LlamaModel
    template: ChatTemplate

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`."""
        return self.model.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of token ids; ValueError for ids outside the vocabulary."""
        return self.model.detokenize(tokens)

    def render_chat(self, messages: Sequence[ChatMessage | Mapping[str, str]], open_turn: bool = True,
                    tools: Sequence[dict[str, object]] = ()) -> str:
        """The model's chat template applied to `messages` (role/content mappings or ChatMessages) and `tools`,
        with the assistant turn opened if `open_turn`."""
        chat = [m if isinstance(m, ChatMessage) else ChatMessage(m["role"], m["content"]) for m in messages]
        return self.template.render(chat, open_turn, tools)

    def chat_tokens(self, messages: Sequence[ChatMessage | Mapping[str, str]], open_turn: bool = True,
                    tools: Sequence[dict[str, object]] = ()) -> list[int]:
        """Prompt token ids for a chat (the template writes any BOS itself); a cached chat prefix
        leaves the assistant turn closed so that later messages can follow it."""
        return self.tokenize(self.render_chat(messages, open_turn, tools), add_special=False, parse_special=True)

    def grammar_from_json_schema(self, schema: dict[str, object]) -> str:
        """GBNF constraining output to `schema`; InvalidRequest if it cannot be expressed."""
        return json_schema_to_grammar(schema)

    @property
    def json_object_grammar(self) -> str:
        """GBNF for any JSON object."""
        return JSON_OBJECT_GRAMMAR
