"""Pure conversions between OpenAI request/response shapes and the engine's vocabulary."""

from __future__ import annotations

import json
from collections.abc import Sequence

from minimill.config import RequestLimits
from minimill.engine.client import EngineClient
from minimill.engine.grammar import GrammarGuard
from minimill.engine.types import SamplingParams, SpecParams, TokenLogprob, Usage
from minimill.errors import ContextOverflow, InvalidRequest
from minimill.models.chat import ChatMessage, ChatTemplate
from minimill.serving import bounds
from minimill.serving.schemas import (
    ChatCompletionRequest,
    ChatLogprobs,
    ChatMessageIn,
    CompletionLogprobs,
    CompletionRequest,
    CompletionTokensDetails,
    CostOut,
    NamedFunction,
    NamedToolChoice,
    PromptTokensDetails,
    SamplingFields,
    TokenLogprobOut,
    TopLogprobOut,
    UsageOut,
)
from minimill.serving.tools import Choice, Function, ToolUse, tool_use

# OpenAI chat fields for features minimill does not have: refused by name rather than silently ignored.
UNSUPPORTED_CHAT_FIELDS = {
    "audio": "audio output is not available", "modalities": "only text output is available",
    "web_search_options": "web search is not available",
}
# Content parts minimill's models cannot read, and the capability each would need.
UNSUPPORTED_PARTS = {"image_url": "image input", "input_image": "image input", "input_audio": "audio input",
                     "file": "file input", "input_file": "file input"}


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    """`stop` as a tuple of non-empty strings."""
    if stop is None:
        return ()
    return tuple(s for s in ([stop] if isinstance(stop, str) else stop) if s)


def logit_bias(raw: dict[str, float] | None, n_vocab: int) -> tuple[tuple[int, float], ...]:
    """Token-id-string keys → (id, bias); 400 for keys that are not token ids of this model."""
    pairs = []
    for key, bias in (raw or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequest(f"logit_bias keys must be token ids, got {key!r}", param="logit_bias") from None
        if not 0 <= token < n_vocab:
            raise InvalidRequest(f"logit_bias token {token} is outside [0, {n_vocab})", param="logit_bias")
        pairs.append((token, bias))
    return tuple(pairs)


def max_tokens_for(requested: int | None, prompt_len: int, n_ctx: int) -> int:
    """The client's max_tokens, or what is left of the context when it gave none."""
    if requested is not None:
        return requested
    left = n_ctx - prompt_len
    if left < 1:
        raise ContextOverflow(f"This model's maximum context length is {n_ctx} tokens, and the prompt "
                              f"has {prompt_len} tokens: nothing is left for the completion.",
                              param="messages", code="context_length_exceeded")
    return left


def speculation(body: SamplingFields, prediction: Sequence[int] = ()) -> SpecParams:
    """The request's speculative decoding: its own choices (None: the server's) and a prediction's tokens."""
    return SpecParams(method=body.speculation, max_draft=body.speculation_max_draft, prediction=tuple(prediction))


def sampling_params(body: SamplingFields, engine: EngineClient, prompt_len: int, *, max_tokens: int | None,
                    logprobs: int | None, grammar: str | None, prediction: Sequence[int] = ()) -> SamplingParams:
    """Map the shared OpenAI sampling fields onto engine SamplingParams."""
    return SamplingParams(
        max_tokens=max_tokens_for(max_tokens, prompt_len, engine.n_ctx),
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=min(body.top_k or 0, engine.model.n_vocab),  # more than the vocabulary cuts nothing
        min_p=body.min_p or 0.0,
        seed=body.seed,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        logit_bias=logit_bias(body.logit_bias, engine.model.n_vocab),
        stop=stop_strings(body.stop),
        ignore_eos=body.ignore_eos,
        logprobs=logprobs,
        grammar=grammar,
        spec=speculation(body, prediction),
    )


def chat_grammar(body: ChatCompletionRequest, engine: EngineClient, guard: GrammarGuard) -> str | None:
    """GBNF for `response_format` (a schema's checked and probed by `guard`), or None for free text."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return engine.json_object_grammar
    if fmt.json_schema is None:
        raise InvalidRequest("response_format.json_schema is required for type json_schema",
                             param="response_format")
    return guard.from_schema(fmt.json_schema.json_schema)


def chat_messages(body: ChatCompletionRequest) -> list[ChatMessage]:
    """The request's messages for the chat template; 400 naming any OpenAI feature minimill lacks."""
    extra = body.model_extra or {}
    for name, why in UNSUPPORTED_CHAT_FIELDS.items():
        value = extra.get(name)
        if value is not None and not (name == "modalities" and value == ["text"]):
            raise InvalidRequest(f"{name} is not supported by this server: {why}", param=name,
                                 code="unsupported_parameter")
    return messages_of(body.messages)


def chat_tools(body: ChatCompletionRequest, template: ChatTemplate, model: str) -> ToolUse | None:
    """`tools` / `tool_choice` / `parallel_tool_calls` (or the legacy `functions` / `function_call`, one
    call at most) as a ToolUse; None without tools or with `tool_choice: "none"`. 400 when the model's chat
    template cannot render tools."""
    if body.functions is not None and body.tools is not None:
        raise InvalidRequest("use tools or the legacy functions, not both", param="functions")
    # OpenAI's rule: a choice among no tools is a mistake in the request, not a plain chat
    if body.tool_choice is not None and body.tools is None:
        raise InvalidRequest("'tool_choice' is only allowed when 'tools' are specified", param="tool_choice")
    if body.function_call is not None and body.functions is None:
        raise InvalidRequest("'function_call' is only allowed when 'functions' are specified",
                             param="function_call")
    given: str | NamedToolChoice | NamedFunction | None
    if body.tools is not None:
        defs, parallel, param, given = [t.function for t in body.tools], body.parallel_tool_calls, "tools", \
            body.tool_choice
    else:
        defs, parallel, param, given = list(body.functions or ()), False, "functions", body.function_call
    named = given.function.name if isinstance(given, NamedToolChoice) else \
        given.name if isinstance(given, NamedFunction) else None
    choice: Choice = given if given in ("auto", "none", "required") else "auto"
    functions = [Function(f.name, f.description or "", f.parameters or {"type": "object", "properties": {}},
                          bool(f.strict)) for f in defs]
    use = tool_use(functions, choice, parallel, named)
    if use is None or use.choice == "none":
        return None
    if not template.renders_tools:
        raise InvalidRequest(f"the model '{model}' cannot call tools: its chat template has no tool support "
                             "(use a model whose template has one, such as qwen2.5-coder-0.5b)", param=param,
                             code="tools_not_supported")
    return use


def completion_prompts(body: CompletionRequest, engine: EngineClient) -> list[list[int]]:
    """Every prompt of a completions request as token ids."""
    if body.suffix:
        raise InvalidRequest("suffix is not supported", param="suffix")
    if body.best_of is not None and body.best_of != body.n:
        raise InvalidRequest("best_of must equal n (or be omitted)", param="best_of")
    prompt = body.prompt
    if isinstance(prompt, str):
        texts: list[str] | None = [prompt]
    elif prompt and all(isinstance(p, str) for p in prompt):
        texts = [str(p) for p in prompt]
    else:
        texts = None
    if texts is not None:
        return [engine.tokenize(text) for text in texts]
    if prompt and all(isinstance(p, int) for p in prompt):
        return [[int(t) for t in prompt]]  # type: ignore[arg-type]
    if prompt and all(isinstance(p, list) for p in prompt):
        return [list(p) for p in prompt]  # type: ignore[arg-type]
    raise InvalidRequest("prompt must be a non-empty string, list of strings, or token ids", param="prompt")


def usage_out(usage: Usage | None, cost: dict[str, float] | None = None) -> UsageOut:
    """EngineClient usage (None: no tokens) and its cost in USD → OpenAI usage with minimill's `cost`."""
    usage = usage or Usage(0, 0, 0)
    output = usage.billed_output_tokens  # rejected prediction tokens count, as OpenAI counts and bills them
    return UsageOut(prompt_tokens=usage.prompt_tokens, completion_tokens=output,
                    total_tokens=usage.prompt_tokens + output,
                    prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens,
                                                              cache_tier=usage.kv_tier),
                    completion_tokens_details=CompletionTokensDetails(
                        accepted_prediction_tokens=usage.accepted_prediction_tokens,
                        rejected_prediction_tokens=usage.rejected_prediction_tokens),
                    cost=CostOut(**cost) if cost is not None else None)


def add_usage(total: Usage, more: Usage) -> Usage:
    """Sum of two usages (several prompts in one completions request)."""
    return Usage(total.prompt_tokens + more.prompt_tokens, total.completion_tokens + more.completion_tokens,
                 total.cached_tokens + more.cached_tokens, total.kv_tier or more.kv_tier,
                 total.kept_tokens + more.kept_tokens, max(total.kept_seconds, more.kept_seconds),
                 total.accepted_prediction_tokens + more.accepted_prediction_tokens,
                 total.rejected_prediction_tokens + more.rejected_prediction_tokens)


def bounded_messages(messages: Sequence[ChatMessageIn], engine: EngineClient,
                     limits: RequestLimits) -> list[ChatMessage]:
    """`messages_of`, within the request bounds: the message count first, then the text's length against the
    context (before anything tokenizes it)."""
    bounds.check_messages(len(messages), limits)
    chat = messages_of(messages)
    bounds.check_text_fits([m.content for m in chat], engine.longest_piece, engine.n_ctx, "messages")
    return chat


def messages_of(messages: Sequence[ChatMessageIn]) -> list[ChatMessage]:
    """Messages for the chat template: `developer` is the newer name of `system`, `function` the legacy
    `tool`; an assistant's calls carry their arguments as objects (templates write them out as JSON). 400
    for content minimill's models cannot read."""
    out = []
    for i, m in enumerate(messages):
        for part in m.content if isinstance(m.content, list) else ():
            if part.type != "text":
                capability = UNSUPPORTED_PARTS.get(part.type, f"content of type {part.type!r}")
                raise InvalidRequest(f"messages[{i}] has a {part.type} part: {capability} is not supported by "
                                     "minimill's models (they read text only)", param=f"messages[{i}].content",
                                     code="unsupported_content")
            if part.text is None:
                raise InvalidRequest(f"messages[{i}] has a text part without text", param=f"messages[{i}].content")
        calls: tuple[dict[str, object], ...] = tuple({"id": c.id, "type": "function",
                       "function": {"name": c.function.name, "arguments": _arguments(c.function.arguments, i)}}
                      for c in m.tool_calls or ())
        role = {"developer": "system", "function": "tool"}.get(m.role, m.role)
        out.append(ChatMessage(role, m.text(), calls, m.tool_call_id, m.name))
    return out


def _arguments(text: str, index: int) -> object:
    """A call's arguments from the history (JSON text) as the value templates write out."""
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidRequest(f"messages[{index}].tool_calls has arguments that are not JSON",
                             param=f"messages[{index}].tool_calls") from None


def prompt_tokens(prompt: str | list[int], engine: EngineClient) -> list[int]:
    """A prompt given as text or as token ids."""
    return engine.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def chat_logprobs(items: Sequence[TokenLogprob]) -> ChatLogprobs:
    """EngineClient logprobs → chat `logprobs.content`."""
    return ChatLogprobs(content=[
        TokenLogprobOut(token=i.text, logprob=i.logprob, bytes=_bytes(i.text),
                        top_logprobs=[TopLogprobOut(token=t.text, logprob=t.logprob, bytes=_bytes(t.text))
                                      for t in i.top])
        for i in items])


def completion_logprobs(items: Sequence[TokenLogprob], start_offset: int, *, first_prompt_token: str | None = None,
                        prompt: Sequence[TokenLogprob] = ()) -> CompletionLogprobs:
    """EngineClient logprobs → legacy completions logprobs (text offsets count from `start_offset`). An echoed,
    scored prompt comes first: its first token (no logprob: nothing precedes it), then `prompt`'s."""
    tokens: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    if first_prompt_token is not None:
        tokens, values, tops = [first_prompt_token], [None], [None]
    for item in (*prompt, *items):
        tokens.append(item.text)
        values.append(item.logprob)
        tops.append({t.text: t.logprob for t in item.top})
    offsets, offset = [], start_offset
    for text in tokens:
        offsets.append(offset)
        offset += len(text)
    return CompletionLogprobs(tokens=tokens, token_logprobs=values, top_logprobs=tops, text_offset=offsets)
