"""Bounds on one request, checked before it is tokenized or reaches llama.cpp; each breach is a 400 that
names the field (the limits are `config.RequestLimits`)."""

from __future__ import annotations

from collections.abc import Sequence

from minimill.config import RequestLimits
from minimill.errors import ContextOverflow, InvalidRequest
from minimill.serving.schemas import CompletionRequest, SamplingFields


def check_sampling(body: SamplingFields, limits: RequestLimits) -> None:
    """Stop strings and logit_bias within their bounds."""
    stops = [body.stop] if isinstance(body.stop, str) else body.stop or []
    if sum(len(s) for s in stops) > limits.max_stop_chars:
        raise InvalidRequest(f"stop sequences may have at most {limits.max_stop_chars} characters in all",
                             param="stop")
    if body.logit_bias is not None and len(body.logit_bias) > limits.max_logit_bias:
        raise InvalidRequest(f"logit_bias may have at most {limits.max_logit_bias} entries", param="logit_bias")


def check_messages(count: int, limits: RequestLimits) -> None:
    """At most `max_messages` messages."""
    if count > limits.max_messages:
        raise InvalidRequest(f"messages may hold at most {limits.max_messages} messages; this request has {count}",
                             param="messages")


def check_text_fits(texts: Sequence[str], longest_piece: int, n_ctx: int, param: str) -> None:
    """ContextOverflow, from the character count alone, for text too long to fit the context: a token is at
    most `longest_piece` bytes, so more than n_ctx x longest_piece characters are more than n_ctx tokens."""
    chars = sum(len(t) for t in texts)
    if chars > n_ctx * longest_piece:
        raise ContextOverflow(f"This model's maximum context length is {n_ctx} tokens, and the prompt has "
                              f"{chars} characters: more than {n_ctx} tokens. Please shorten it.", param=param,
                              code="context_length_exceeded")


def check_token_ids(prompts: Sequence[Sequence[int]], n_vocab: int, param: str = "prompt") -> None:
    """Every prompt token id inside the vocabulary (checked before anything detokenizes them)."""
    for prompt in prompts:
        if any(not 0 <= t < n_vocab for t in prompt):
            raise InvalidRequest(f"token ids must be in [0, {n_vocab})", param=param)


def completion_texts(body: CompletionRequest) -> list[str]:
    """The prompt strings of a completions request (none when it gives token ids)."""
    prompt = body.prompt
    if isinstance(prompt, str):
        return [prompt]
    return [p for p in prompt if isinstance(p, str)]
