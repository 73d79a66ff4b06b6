"""OpenAI wire shapes: request models (validated, unknown fields accepted) and response models."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from minimill.config import SpecMethod

log = logging.getLogger(__name__)
Item = TypeVar("Item", "FileObject", "BatchObject")


class OpenAIRequest(BaseModel):
    """Base of request bodies: OpenAI clients add fields often, so unknown ones are logged and ignored."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_unknown(self) -> OpenAIRequest:
        if self.model_extra:
            log.debug("ignoring unknown request fields: %s", sorted(self.model_extra))
        return self


class ContentPart(BaseModel):
    """A part of a message's content list: text, or a kind of input minimill's models do not read
    (`image_url`, `input_audio`, `file`: refused by name when the message is used)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    text: str | None = None


class FunctionCallIn(BaseModel):
    """`function` of a tool call in the history: the name and the arguments as JSON text."""

    name: str
    arguments: str = "{}"


class ToolCallIn(BaseModel):
    """A call the assistant made earlier in the conversation."""

    id: str = Field(max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(BaseModel):
    """One input message; content may be a string or a list of parts. Assistant messages may carry the
    `tool_calls` they made; `tool` messages answer one by `tool_call_id` (`function`: the legacy form)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = Field(default=None, max_length=256)

    def text(self) -> str:
        """Content flattened to text (parts other than text are refused by `convert` before this)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)


FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class FunctionDef(BaseModel):
    """A function a tool (or the legacy `functions`) offers: name, description, JSON schema of its arguments."""

    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(BaseModel):
    """One entry of `tools`."""

    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    """`{"name": ...}` of a named tool choice."""

    name: str


class NamedToolChoice(BaseModel):
    """`tool_choice: {"type": "function", "function": {"name": ...}}`: that function must be called."""

    type: Literal["function"]
    function: NamedFunction


class StreamOptions(BaseModel):
    """`stream_options`: whether the last chunk carries usage."""

    include_usage: StrictBool = False


class JsonSchemaFormat(BaseModel):
    """`response_format.json_schema`."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = "response"
    json_schema: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """`response_format`: free text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class SamplingFields(OpenAIRequest):
    """Fields shared by chat and completions requests."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=16)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    seed: int | None = None
    user: str | None = None
    # vLLM-style extensions
    top_k: int | None = Field(default=None, ge=0)
    min_p: Probability | None = None
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    ignore_eos: StrictBool = False
    # minimill: reuse an explicit prompt cache; keep this chat's KV alive between turns
    cache_id: str | None = Field(default=None, min_length=1, max_length=64)
    session_id: str | None = Field(default=None, min_length=1, max_length=256)
    prompt_cache_key: str | None = Field(default=None, min_length=1, max_length=256)
    session_ttl_seconds: float | None = Field(default=None, gt=0)
    # minimill: speculative decoding for this request, by prompt lookup or the server's draft model (the server's
    # default when not given), and the most draft tokens a step; the output is the same either way, only the
    # steps it takes differ
    speculation: SpecMethod | None = None
    speculation_max_draft: int | None = Field(default=None, ge=0, le=64)

    @property
    def session_key(self) -> str | None:
        """`session_id`, or OpenAI's `prompt_cache_key` standing in for it."""
        return self.session_id or self.prompt_cache_key

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return stop


class Prediction(OpenAIRequest):
    """OpenAI's Predicted Outputs: text the answer is expected to repeat much of (an edited file, a row to
    clean), used as a draft that is verified token by token."""

    type: Literal["content"]
    content: str | list[ContentPart]

    @field_validator("content")
    @classmethod
    def _text_only(cls, content: str | list[ContentPart]) -> str | list[ContentPart]:
        if isinstance(content, list) and any(part.type != "text" for part in content):
            raise ValueError("a prediction's content parts must be text")
        return content

    def text(self) -> str:
        """The predicted text (text parts joined)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)


class ChatCompletionRequest(SamplingFields):
    """`POST /v1/chat/completions`."""

    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[ToolIn] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool = True
    prediction: Prediction | None = None
    # the legacy form of tools: one function call at most
    functions: list[FunctionDef] | None = Field(default=None, max_length=128)
    function_call: Literal["none", "auto"] | NamedFunction | None = None
    # OpenAI's: up to 16 string pairs. minimill's router reads `task`, `grader` and `min_confidence`.
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = None

    @field_validator("metadata")
    @classmethod
    def _at_most_sixteen_pairs(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        if metadata is not None and len(metadata) > 16:
            raise ValueError("metadata may hold at most 16 key-value pairs")
        return metadata


class CompletionRequest(SamplingFields):
    """`POST /v1/completions`."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=None, ge=0)  # 0 with echo and logprobs: scoring the prompt
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: StrictBool = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)


# ---- responses -------------------------------------------------------------------------------
class PromptTokensDetails(BaseModel):
    """Prompt tokens whose KV was reused, and (minimill) the tier a named cache or session came from."""

    cached_tokens: int
    cache_tier: Literal["live", "ram", "disk"] | None = None


class CostOut(BaseModel):
    """minimill's `usage.cost`: what this request was billed, in USD, by token class."""

    input: float
    cached_input: float
    output: float
    cache_storage: float
    session_retention: float
    total: float


class CompletionTokensDetails(BaseModel):
    """OpenAI's breakdown of completion tokens: with Predicted Outputs, the predicted tokens the answer kept and
    those it did not (computed, counted in `completion_tokens` and billed as output, as OpenAI bills them)."""

    reasoning_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


class UsageOut(BaseModel):
    """`usage` of a response."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails = Field(default_factory=CompletionTokensDetails)
    cost: CostOut | None = None


class TopLogprobOut(BaseModel):
    """One alternative of chat logprobs."""

    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobOut(TopLogprobOut):
    """A chosen token of chat logprobs, with alternatives."""

    top_logprobs: list[TopLogprobOut]


class ChatLogprobs(BaseModel):
    """`choices[].logprobs` of chat completions."""

    content: list[TokenLogprobOut]


class CompletionLogprobs(BaseModel):
    """`choices[].logprobs` of legacy completions."""

    tokens: list[str]
    token_logprobs: list[float | None]  # None: an echoed prompt's first token (nothing precedes it)
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class FunctionCallOut(BaseModel):
    """`function` of a call the model made: its name and the arguments as a JSON string."""

    name: str
    arguments: str


class ToolCallOut(BaseModel):
    """One call the model made."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ChatMessageOut(BaseModel):
    """The assistant's message: text, or calls (then content is null unless the model wrote text first)."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = None
    function_call: FunctionCallOut | None = None  # a request with the legacy `functions` gets its call here


class ChatChoice(BaseModel):
    """One choice of a chat completion."""

    index: int
    message: ChatMessageOut
    finish_reason: str | None
    logprobs: ChatLogprobs | None = None


class ChatCompletion(BaseModel):
    """A whole chat completion."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: UsageOut


class CompletionChoice(BaseModel):
    """One choice of a legacy completion."""

    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class Completion(BaseModel):
    """A whole legacy completion."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: UsageOut


class ModelCard(BaseModel):
    """An entry of `GET /v1/models`."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "minimill"
    context_length: int | None
    description: str
    default: bool
    # minimill: USD per 1M tokens, and the model's eval scores (None until it has been evaluated)
    prices: dict[str, float] | None = None
    scores: dict[str, Any] | None = None


class ModelList(BaseModel):
    """`GET /v1/models`."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---- prompt caches ---------------------------------------------------------------------------
class CacheCreateRequest(OpenAIRequest):
    """`POST /v1/caches`: a prefix (chat messages or a prompt) to prefill once and keep."""

    model: str
    messages: list[ChatMessageIn] | None = Field(default=None, min_length=1)
    prompt: str | list[int] | None = None
    ttl_seconds: float | None = Field(default=None, gt=0)
    shared: StrictBool = False

    @model_validator(mode="after")
    def _one_prefix(self) -> CacheCreateRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'messages' or 'prompt'")
        return self


class TokenizeRequest(OpenAIRequest):
    """`POST /tokenize` (vLLM's shape): a prompt, or chat messages rendered by the model's template."""

    model: str
    prompt: str | None = None
    messages: list[ChatMessageIn] | None = Field(default=None, min_length=1)
    add_special_tokens: StrictBool = True
    add_generation_prompt: StrictBool = True
    return_token_strs: StrictBool = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'messages' or 'prompt'")
        return self


class TokenizeResponse(BaseModel):
    """What `/tokenize` answers: the ids, their count, and the context a request may use."""

    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(OpenAIRequest):
    """`POST /detokenize` (vLLM's shape)."""

    model: str
    tokens: list[int] = Field(max_length=1 << 20)


class DetokenizeResponse(BaseModel):
    """The text of the ids."""

    prompt: str


class CacheUpdateRequest(OpenAIRequest):
    """`PATCH /v1/caches/{id}`: keep the cache `ttl_seconds` from now."""

    ttl_seconds: float = Field(gt=0)


class CacheObject(BaseModel):
    """A prompt cache. `tier` is where its KV is now: live, ram, disk (None: recomputed on next use)."""

    id: str
    object: Literal["prompt_cache"] = "prompt_cache"
    model: str
    tokens: int
    created_at: int
    expires_at: int
    tier: Literal["live", "ram", "disk"] | None
    shared: bool
    usage: UsageOut | None = None


class CacheList(BaseModel):
    """`GET /v1/caches`."""

    object: Literal["list"] = "list"
    data: list[CacheObject]


class CacheDeleted(BaseModel):
    """`DELETE /v1/caches/{id}`."""

    id: str
    object: Literal["prompt_cache.deleted"] = "prompt_cache.deleted"
    deleted: bool = True


# ---- files and batches -----------------------------------------------------------------------
class FileObject(BaseModel):
    """OpenAI's File object."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class Page(BaseModel, Generic[Item]):
    """One page of a cursor-paged list (`GET /v1/files`, `GET /v1/batches`)."""

    object: Literal["list"] = "list"
    data: list[Item]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    @classmethod
    def of(cls, items: list[Item], has_more: bool) -> Page[Item]:
        """A page of `items`, its first and last ids the cursors."""
        return cls(data=items, first_id=items[0].id if items else None, last_id=items[-1].id if items else None,
                   has_more=has_more)


class FileDeleted(BaseModel):
    """`DELETE /v1/files/{id}`."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class BatchCreateRequest(OpenAIRequest):
    """`POST /v1/batches`."""

    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: Literal["/v1/chat/completions", "/v1/completions"]
    completion_window: str = Field(default="24h", pattern=r"^[1-9][0-9]{0,2}h$")
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=16)

    @property
    def window_seconds(self) -> float:
        """`completion_window` in seconds."""
        return int(self.completion_window[:-1]) * 3600.0

    @field_validator("completion_window")
    @classmethod
    def _at_most_a_week(cls, window: str) -> str:
        if int(window[:-1]) > 168:
            raise ValueError("completion_window may be at most 168h")
        return window


class BatchErrorOut(BaseModel):
    """Why a batch failed validation: one entry of `errors.data`."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    """`errors` of a failed batch."""

    object: Literal["list"] = "list"
    data: list[BatchErrorOut]


class RequestCounts(BaseModel):
    """`request_counts`: lines in the input, done, and failed (in the error file)."""

    total: int
    completed: int
    failed: int


class InputTokensDetails(BaseModel):
    """Prompt tokens whose KV was reused (a group's prefix, a cache)."""

    cached_tokens: int


class OutputTokensDetails(BaseModel):
    """No reasoning tokens here; the field is OpenAI's."""

    reasoning_tokens: int = 0


class BatchUsage(BaseModel):
    """`usage` of a batch: tokens over every line and group prefix so far."""

    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class BatchObject(BaseModel):
    """OpenAI's Batch object, with minimill's `cost` (USD billed so far, at the batch discount)."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None
    usage: BatchUsage
    cost: CostOut
