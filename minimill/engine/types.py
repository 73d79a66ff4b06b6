"""The engine's public vocabulary: what a caller submits and what streams back.

Frozen dataclasses with token ids only; no HTTP and no llama.cpp here. The API layer builds a
`GenerationRequest`, `Engine.generate` yields `ChoiceDelta`s and finishes with a `Usage`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from minimill.config import SpecMethod

FinishReason = Literal["stop", "length", "abort"]
KVTier = Literal["live", "ram", "disk"]
Priority = Literal["online", "batch"]


@dataclass(frozen=True, slots=True)
class SpecParams:
    """A request's speculative decoding: `method` prompt lookup ("ngram"), the server's draft model ("draft"),
    "off", or the server's default (None); at most `max_draft` draft tokens a step (None: the server's); and the
    tokens of a prediction of the output (OpenAI's Predicted Outputs; empty: none). Drafts never change what is
    sampled, only how many steps it takes."""

    method: SpecMethod | None = None
    max_draft: int | None = None
    prediction: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request sampling, mapped onto one native llama.cpp sampler chain.

    `temperature == 0` means greedy. `logprobs is None` means no logprobs; an int asks for the
    chosen token's logprob plus that many alternatives. `grammar` is GBNF text.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None
    # Scoring: the log-probability of every prompt token after the first (and this many alternatives), as
    # computed in the prompt's own prefill (no prefix reuse). With max_tokens 0 nothing is generated.
    prompt_logprobs: int | None = None
    grammar: str | None = None
    # With a trigger, the grammar is lazy: output is free until this regex matches it, and from the token
    # where the match starts it must follow the grammar (a tool call the model chose to open).
    grammar_trigger: str | None = None
    spec: SpecParams = field(default_factory=SpecParams)

    @property
    def greedy(self) -> bool:
        """True when sampling reduces to argmax."""
        return self.temperature <= 0.0


@dataclass(frozen=True, slots=True)
class NamedKV:
    """A named, pinned KV entry (a prompt cache or a chat session) and the prefix namespace it is
    indexed under. `durable` entries are written to disk as soon as they exist. With `ttl` set (a
    session), the pin lasts `ttl` seconds from the end of the request instead of until `expires_at`."""

    name: str
    namespace: str
    expires_at: float
    durable: bool = False
    ttl: float | None = None
    tokens: tuple[int, ...] = ()  # a cache's prefix, to prefill again if its KV is in no tier


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One prompt (as token ids) to continue `n` times. `tenant` scopes prefix reuse.

    `reuse` names an entry whose KV the prompt starts with (loaded from a colder tier if it is not
    live); `keep` pins the first choice's prompt and answer under a name once it finishes. `batch`
    priority (Batch API lines) runs in the capacity online requests leave.
    """

    request_id: str
    prompt_tokens: tuple[int, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    tenant: str = ""
    reuse: NamedKV | None = None
    keep: NamedKV | None = None
    priority: Priority = "online"
    # Called on the caller's event loop with (request_id, usage so far) when the request is aborted after
    # some of it was computed, so that what was computed is billed even though nobody reads the answer.
    on_abort: Callable[[str, Usage], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TopLogprob:
    """One candidate token and its log-probability under the model (before sampling filters)."""

    token_id: int
    text: str
    logprob: float


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The chosen token's logprob and the most likely alternatives at its position."""

    token_id: int
    text: str
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class ChoiceDelta:
    """New output of one choice: text safe to show (stop strings held back) and its tokens.

    `finish_reason` is set on the last delta of a choice, which may carry no text.
    """

    index: int
    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    prompt_logprobs: tuple[TokenLogprob, ...] = ()  # on a choice's first delta, when the request scored its prompt


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of a finished request. `cached_tokens` counts prompt tokens whose KV was reused."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    kv_tier: KVTier | None = None  # where a named entry's KV came from
    kept_tokens: int = 0  # tokens of KV pinned for a session after this request
    kept_seconds: float = 0.0  # ... and for how long
    # Predicted Outputs, as OpenAI counts them: drafted prediction tokens the output kept, and those it did not
    # (computed and billed as output, but not part of `completion_tokens`).
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def billed_output_tokens(self) -> int:
        """Output tokens to bill: the completion and any rejected prediction tokens (as OpenAI bills them)."""
        return self.completion_tokens + self.rejected_prediction_tokens


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot of the engine for /health and metrics."""

    waiting: int
    running: int
    retained: int
    kv_used: int
    kv_total: int
    healthy: bool
    restarts: int = 0
