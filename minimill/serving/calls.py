"""A chat or completions request, validated and tokenized, ready to run: the part of an endpoint that
the online route and a Batch API line share (so both validate, run and answer identically)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Literal

from minimill.engine.client import EngineClient
from minimill.engine.types import ChoiceDelta, GenerationRequest, NamedKV, Priority, SamplingParams
from minimill.errors import InvalidRequest
from minimill.runtime import Runtime
from minimill.serving import bounds, convert
from minimill.serving.charging import AbortBilling, KVUse, aborted_billing, charged, kv_use
from minimill.serving.generation import ChoiceText, start
from minimill.serving.schemas import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessageOut,
    Completion,
    CompletionChoice,
    CompletionRequest,
    FunctionCallOut,
    ToolCallOut,
    UsageOut,
)
from minimill.serving.tools import ToolUse, calls_grammar
from minimill.serving.tools import parse as parse_calls


@dataclass(frozen=True, slots=True)
class ChatCall:
    """`POST /v1/chat/completions`, prepared."""

    body: ChatCompletionRequest
    engine: EngineClient
    prompt: list[int]
    use: KVUse
    params: SamplingParams
    tools: ToolUse | None = None
    kind: Literal["chat.completion"] = "chat.completion"

    @classmethod
    def prepare(cls, body: ChatCompletionRequest, runtime: Runtime, tenant: str, *, sessions: bool = True) -> ChatCall:
        """Validate what the schema cannot, render the template, resolve caches and sessions."""
        engine = runtime.engine_for(body.model)
        limits = runtime.config.limits
        if body.top_logprobs is not None and not body.logprobs:
            raise InvalidRequest("top_logprobs requires logprobs to be true", param="top_logprobs")
        bounds.check_messages(len(body.messages), limits)
        bounds.check_sampling(body, limits)
        messages = convert.chat_messages(body)
        bounds.check_text_fits([m.content for m in messages], engine.longest_piece, engine.n_ctx, "messages")
        guard = runtime.grammars[engine.name]
        tools = convert.chat_tools(body, engine.template, engine.name)
        if tools is None:
            grammar, trigger = convert.chat_grammar(body, engine, guard), None
        elif body.response_format is not None and body.response_format.type != "text":
            raise InvalidRequest("response_format cannot be combined with tools here: the answer is either calls "
                                 "or free text", param="response_format")
        else:  # calls are constrained from the start when required, from the opened call when the model chooses
            grammar = calls_grammar(tools, lambda schema: guard.from_schema(schema, "tools"))
            trigger = tools.trigger()
        prompt = engine.chat_tokens(messages, tools=[f.as_tool() for f in tools.functions] if tools else ())
        use = kv_use(runtime, body, tenant, engine.name, [prompt], sessions=sessions)
        predicted = body.prediction.text() if body.prediction is not None else ""
        bounds.check_text_fits([predicted], engine.longest_piece, engine.n_ctx, "prediction")
        params = convert.sampling_params(
            body, engine, len(prompt), max_tokens=body.max_completion_tokens or body.max_tokens,
            logprobs=(body.top_logprobs or 0) if body.logprobs else None, grammar=grammar,
            prediction=engine.tokenize(predicted, add_special=False) if predicted else ())
        if trigger is not None:
            params = replace(params, grammar_trigger=trigger)
        return cls(body, engine, prompt, use, params, tools)

    @property
    def prompts(self) -> list[list[int]]:
        """The prompt's token ids (one prompt)."""
        return [self.prompt]

    @property
    def n_choices(self) -> int:
        """Choices in the answer."""
        return self.body.n

    def requests(self, rid: str, tenant: str, *, reuse: NamedKV | None = None, priority: Priority = "online",
                 on_abort: AbortBilling | None = None) -> list[GenerationRequest]:
        """What to hand the engine; `reuse` (a batch group's prefix) applies unless a cache is named."""
        return [GenerationRequest(rid, tuple(self.prompt), self.params, self.body.n, tenant,
                                  self.use.reuse or reuse, self.use.keep, priority, on_abort)]

    def response(self, rid: str, created: int, choices: list[ChoiceText], usage: UsageOut) -> ChatCompletion:
        """The whole answer; with tools, each choice's calls as `tool_calls` (finish_reason `tool_calls`)."""
        logprobs = self.body.logprobs
        return ChatCompletion(id=rid, created=created, model=self.engine.name,
                              system_fingerprint=self.engine.system_fingerprint, usage=usage, choices=[
            ChatChoice(index=i, message=message, finish_reason=finish,
                       logprobs=convert.chat_logprobs(c.logprobs) if logprobs else None)
            for i, c in enumerate(choices) for message, finish in [self._message(c)]])

    def _message(self, choice: ChoiceText) -> tuple[ChatMessageOut, str | None]:
        """A choice's message and finish reason."""
        if self.tools is None:
            return ChatMessageOut(content=choice.text), choice.finish_reason
        content, calls = parse_calls(choice.text, self.tools.names)
        if not calls:
            return ChatMessageOut(content=choice.text), choice.finish_reason
        # cut short by max_tokens, the answer says so even after a complete call (as the stream does)
        finish = "length" if choice.finish_reason == "length" else None
        if self.body.functions is not None:  # the legacy shape: one call, as `function_call`
            first = calls[0]
            return ChatMessageOut(content=content or None,
                                  function_call=FunctionCallOut(name=first.name, arguments=first.arguments)), \
                finish or "function_call"
        return ChatMessageOut(content=content or None, tool_calls=[
            ToolCallOut(id=c.id, function=FunctionCallOut(name=c.name, arguments=c.arguments)) for c in calls]), \
            finish or "tool_calls"


@dataclass(frozen=True, slots=True)
class CompletionCall:
    """`POST /v1/completions`, prepared: one or several prompts."""

    body: CompletionRequest
    engine: EngineClient
    prompts: list[list[int]]
    use: KVUse
    params: list[SamplingParams]  # one per prompt (max_tokens depends on its length)
    echoes: list[str]
    first_tokens: list[str]  # each prompt's first token's text: the head of its scored echo
    kind: Literal["text_completion"] = "text_completion"

    @classmethod
    def prepare(cls, body: CompletionRequest, runtime: Runtime, tenant: str, *,
                sessions: bool = True) -> CompletionCall:
        """Tokenize every prompt, resolve caches and sessions, check each prompt's sampling fields."""
        engine = runtime.engine_for(body.model)
        limits = runtime.config.limits
        bounds.check_sampling(body, limits)
        if isinstance(body.prompt, list):
            bounds.check_messages(len(body.prompt), limits)
        bounds.check_text_fits(bounds.completion_texts(body), engine.longest_piece, engine.n_ctx, "prompt")
        prompts = convert.completion_prompts(body, engine)
        bounds.check_token_ids(prompts, engine.model.n_vocab)
        use = kv_use(runtime, body, tenant, engine.name, prompts, sessions=sessions)
        params = [convert.sampling_params(body, engine, len(p), max_tokens=body.max_tokens, logprobs=body.logprobs,
                                          grammar=None) for p in prompts]
        if body.echo and body.logprobs is not None:  # OpenAI's echo with logprobs scores the prompt too
            params = [replace(p, prompt_logprobs=body.logprobs) for p in params]
        echoes = [engine.detokenize(p) if body.echo else "" for p in prompts]
        firsts = [engine.detokenize(p[:1]) if body.echo else "" for p in prompts]
        return cls(body, engine, prompts, use, params, echoes, firsts)

    @property
    def n_choices(self) -> int:
        """Choices in the answer: n for every prompt."""
        return self.body.n * len(self.prompts)

    def requests(self, rid: str, tenant: str, *, reuse: NamedKV | None = None, priority: Priority = "online",
                 on_abort: AbortBilling | None = None) -> list[GenerationRequest]:
        """One engine request per prompt; the session (if any) keeps the first."""
        return [GenerationRequest(f"{rid}-{k}", tuple(p), params, self.body.n, tenant, self.use.reuse or reuse,
                                  self.use.keep if k == 0 else None, priority, on_abort)
                for k, (p, params) in enumerate(zip(self.prompts, self.params, strict=True))]

    def response(self, rid: str, created: int, choices: list[ChoiceText], usage: UsageOut) -> Completion:
        """The whole answer, echoes included (and, with echo and logprobs, the prompt's token logprobs)."""
        out = []
        for i, c in enumerate(choices):
            k = i // self.body.n
            echo = self.echoes[k]
            logprobs = None
            if self.body.logprobs is not None and self.body.echo:
                logprobs = convert.completion_logprobs(c.logprobs, 0, first_prompt_token=self.first_tokens[k],
                                                       prompt=choices[k * self.body.n].prompt_logprobs)
            elif self.body.logprobs is not None:
                logprobs = convert.completion_logprobs(c.logprobs, len(echo))
            out.append(CompletionChoice(index=i, text=echo + c.text, finish_reason=c.finish_reason,
                                        logprobs=logprobs))
        return Completion(id=rid, created=created, model=self.engine.name,
                          system_fingerprint=self.engine.system_fingerprint, choices=out, usage=usage)


Call = ChatCall | CompletionCall


async def billed_stream(call: Call, runtime: Runtime, rid: str, tenant: str, *,
                        started: float | None = None) -> AsyncIterator[ChoiceDelta | UsageOut]:
    """An online call started on its engine (queue-full and context errors raise here, before any response)
    and billed when its usage arrives, or for what was computed when it is aborted (client gone). Its latency
    is counted from `started` (a `time.monotonic()` reading; default: when this is called)."""
    started = time.monotonic() if started is None else started
    model, kind = call.engine.name, call.kind
    on_abort = aborted_billing(runtime, tenant=tenant, model=model, kind=kind, use=call.use, started=started)
    return charged(await start(call.engine, call.requests(rid, tenant, on_abort=on_abort)), runtime, request_id=rid,
                   tenant=tenant, model=model, kind=kind, use=call.use, prompts=len(call.prompts), started=started)
