"""Frozen settings tree. The only module that reads the environment (`MINIMILL_*`).

Precedence: command-line flags > environment > defaults. Built once by `serve` (or a test) and
passed down; nothing mutates it afterwards.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

KVType = Literal["f16", "bf16", "q8_0", "q4_0"]
SpecMethod = Literal["ngram", "draft", "off"]  # speculative decoding: prompt lookup, the draft model, none
# How requests are spread over replicas: minimill's own (session, cache, prefix, load), round robin, or Ray Serve
# LLM's PrefixCacheAffinityRouter on the prompt text (the last two to compare against).
ReplicaRouter = Literal["affinity", "round_robin", "ray_prefix"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How one model's engine is sized: KV cells, sequences, threads and the per-step token budget."""

    kv_size: int = 8192
    max_seqs: int = 32
    threads: int | None = None
    step_tokens: int = 512
    # Admission: a request whose expected time to first token exceeds `max_queue_delay` seconds is refused
    # (429 with a Retry-After from the backlog); `max_queue` bounds one tenant's waiting requests.
    max_queue: int = 256
    max_queue_delay: float = 30.0
    kv_type: KVType = "bf16"
    # Cells that finished sequences hold alone (shared with no running sequence) stay live up to this
    # many; past it the least recently used leave (unpinned to RAM with `retain_ram`, pinned caches and
    # sessions last, to their tier copy). Attention in a unified KV spans every used cell, so this is what
    # retention may add to every decode step: at 0 a step attends only what running sequences hold, and
    # finished prefixes come back from RAM by a memcpy when a prompt resends them (W6 in bench/RESULTS.md).
    retain_cells: int = 0
    # Finished prefixes evicted from the live KV are saved to RAM (in what pinned KV leaves of
    # `ram_tier_bytes`) and loaded back when a later prompt of the tenant resends them; off: dropped.
    retain_ram: bool = True
    # Pinned KV (prompt caches, sessions) that leaves the live context goes to RAM, then to disk.
    ram_tier_bytes: int = 2 << 30
    disk_tier_bytes: int = 32 << 30
    # Finished prefixes that fall out of RAM go to disk (a directory of their own, beside the pinned tier's) up to
    # this many bytes, least recently saved out first; 0: dropped. With `retain_ram` only, and a data dir. Off by
    # default until the engine's RSS under it is understood: it grew 44-131 MiB over CI's 60-s soak (flat off).
    prefix_disk_bytes: int = 0
    # Their directory under the model's tier directory. It is this process's own (emptied when it opens): each
    # replica sharing a data dir gets its own (`prefixes-replica-<rank>`). Not a flag.
    prefix_disk_dir: str = "prefixes"
    # Batch API work runs in what online requests leave: at most `batch_step_tokens` a step while online
    # requests are about (one arriving mid-step waits for a short step only), `batch_idle_step_tokens` when
    # none has been seen for 2 s, and `batch_max_seqs` sequences (None: an eighth of max_seqs). Few batch
    # sequences keep the used KV small, and attention in a unified KV spans every used cell.
    batch_step_tokens: int = 8
    batch_idle_step_tokens: int = 128
    batch_max_seqs: int | None = None
    # Speculative decoding, verified in the same step (the output is unchanged): by prompt lookup ("ngram": a
    # decoding sequence drafts the tokens that followed the latest earlier occurrence of its last few tokens) or
    # by `draft_model` ("draft": a smaller model with the same vocabulary, a catalogue id or a .gguf path); how
    # many follows each sequence's acceptance, up to `spec_max_draft`. A request may choose for itself.
    speculation: SpecMethod = "off"
    spec_max_draft: int = 8
    draft_model: str | None = None

    def __post_init__(self) -> None:
        if self.kv_size < 256:
            raise ValueError("kv_size must be at least 256 cells")
        if not 1 <= self.max_seqs <= 256:
            raise ValueError("max_seqs must be between 1 and 256")
        if self.step_tokens < 16:
            raise ValueError("step_tokens must be at least 16")
        if self.retain_cells < 0:
            raise ValueError("retain_cells must be >= 0")
        if self.max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if not self.max_queue_delay > 0:
            raise ValueError("max_queue_delay must be a positive number of seconds")
        if not 1 <= self.batch_step_tokens <= self.batch_idle_step_tokens:
            raise ValueError("batch_step_tokens must be at least 1 and at most batch_idle_step_tokens")
        if self.batch_max_seqs is not None and not 1 <= self.batch_max_seqs <= self.max_seqs:
            raise ValueError("batch_max_seqs must be between 1 and max_seqs")
        if not 0 <= self.spec_max_draft <= 64:
            raise ValueError("spec_max_draft must be between 0 and 64")
        if self.speculation == "draft" and self.draft_model is None:
            raise ValueError("speculation 'draft' needs a draft model (--draft-model)")


@dataclass(frozen=True, slots=True)
class ScaleConfig:
    """Replicas on Ray Serve (`minimill serve --replicas N`): each a whole minimill with its own engine
    process, behind one endpoint that routes by session, cache and prefix. 1 replica and no Ray address: the
    single-process server. Without `ray_address` a local Ray instance is started on 127.0.0.1."""

    replicas: int = 1
    max_replicas: int | None = None  # set: Ray Serve autoscales between `replicas` and this on requests in flight
    # Autoscaling (with max_replicas): how long requests in flight must stay above (below) `max_seqs` per
    # replica before a replica is added (removed). Ray Serve's defaults: quick to add, slow to give back.
    upscale_delay: float = 30.0
    downscale_delay: float = 600.0
    ray_address: str | None = None
    replica_cpus: float = 1.0  # declared to Ray per replica; also its engine's threads unless --threads is given
    replica_gpus: float = 0.0
    replica_router: ReplicaRouter = "affinity"
    stats_period: float = 1.0  # seconds between a replica's reports of what it holds to the router
    object_store_bytes: int = 128 << 20  # a local Ray instance's object store: requests and answers are small

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError("replicas must be at least 1")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError("max_replicas must be at least replicas")
        if self.replica_cpus <= 0 or self.replica_gpus < 0:
            raise ValueError("replica_cpus must be > 0 and replica_gpus >= 0")
        if self.upscale_delay < 0 or self.downscale_delay < 0:
            raise ValueError("upscale_delay and downscale_delay must be >= 0")

    @property
    def on_ray(self) -> bool:
        """Whether `serve` runs replicas on Ray rather than one process."""
        return self.replicas > 1 or self.max_replicas is not None or self.ray_address is not None


def is_loopback(host: str) -> bool:
    """Whether `host` is an address (or name) only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What `minimill serve` listens on and whom it lets in.

    Fails closed: admin keys are API keys too (so admin keys alone never leave the server open), and a
    server that listens beyond loopback without keys refuses to start unless `insecure_no_auth`.
    Bodies larger than `max_body_bytes` (uploads: the batch limits' `max_file_bytes`) are refused with 413.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    insecure_no_auth: bool = False
    max_body_bytes: int = 16 << 20

    def __post_init__(self) -> None:
        missing = [k for k in self.admin_keys if k not in self.api_keys]
        if missing:
            object.__setattr__(self, "api_keys", (*self.api_keys, *missing))
        if not self.api_keys and not self.insecure_no_auth and not is_loopback(self.host):
            raise ValueError(f"refusing to listen on {self.host} without API keys: anyone who can reach it could "
                             "use it. Give --api-key (or MINIMILL_API_KEYS), or --insecure-no-auth to allow it")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Bounds on one request, checked before any of it reaches llama.cpp (each breach is a 400 naming it)."""

    max_messages: int = 4096
    max_stop_chars: int = 1024
    max_logit_bias: int = 1024
    max_schema_bytes: int = 64 * 1024
    max_schema_depth: int = 32
    # Repetition bounds of a schema (maxLength, maxItems, ...) become nested grammar rules.
    max_schema_repeat: int = 1000


@dataclass(frozen=True, slots=True)
class CacheLimits:
    """TTL bounds, in seconds, for explicit prompt caches and chat sessions."""

    default_cache_ttl: float = 3600.0
    max_cache_ttl: float = 7 * 24 * 3600.0
    default_session_ttl: float = 15.0
    max_session_ttl: float = 3600.0


@dataclass(frozen=True, slots=True)
class BillingConfig:
    """Where the ledger is and how prices are set.

    `ledger_url` None = a SQLite file in the data directory. Prices left None come from the cost
    model: hardware $/hour ÷ measured tokens/hour × margin (see billing/prices.py).
    """

    ledger_url: str | None = None
    hardware_usd_per_hour: float = 0.10
    margin: float = 1.5
    price_input: float | None = None
    price_cached_input: float | None = None
    price_output: float | None = None
    price_cache_storage: float | None = None
    price_session_retention: float | None = None
    price_batch_discount: float | None = None


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """The Files and Batch API: upload size, lines per batch, and the shortest prefix worth sharing."""

    max_file_bytes: int = 200 * 1024 * 1024  # OpenAI's limits: 200 MB, 50,000 requests
    max_batch_lines: int = 50_000
    min_group_prefix: int = 32


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """An OpenAI-compatible endpoint whose model minimill serves under `name`: another minimill or a
    commercial API. `api_key` comes from the environment variable named in the spec and is never
    printed (`repr=False`). Prices are USD per 1M tokens (None: the local price book's)."""

    name: str
    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    price_input: float | None = None
    price_cached_input: float | None = None
    price_output: float | None = None

    @classmethod
    def parse(cls, text: str, env: dict[str, str]) -> UpstreamSpec:
        """`NAME=URL[,model=ID][,key-env=VAR][,timeout=S][,input=P][,cached-input=P][,output=P]`."""
        head, *options = [part.strip() for part in text.split(",")]
        name, sep, url = head.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"upstream {text!r}: expected NAME=http(s)://HOST/v1[,option=value...]")
        values: dict[str, Any] = {"name": name, "base_url": url.rstrip("/"), "model": name}
        numbers = {"timeout": "timeout", "input": "price_input", "cached-input": "price_cached_input",
                   "output": "price_output"}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep:
                raise ValueError(f"upstream {name}: option {option!r} is not key=value")
            if key == "model":
                values["model"] = value
            elif key == "key-env":
                if value not in env:
                    raise ValueError(f"upstream {name}: environment variable {value} (its API key) is not set")
                values["api_key"] = env[value]
            elif key in numbers:
                values[numbers[key]] = float(value)
            else:
                raise ValueError(f"upstream {name}: unknown option {key!r} (model, key-env, timeout, input, "
                                 "cached-input, output)")
        return cls(**values)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """`model: "default"` and `model: "auto"`, and the upstream models.

    `default_model` overrides the scoreboard's choice; otherwise the default is the cheapest served model
    whose mean eval quality is at least `default_quality_ratio` x the best served model's. For "auto", a
    model is expected to pass a task when its accuracy on that task's suite is at least `good_enough` x the
    best model's; an answer whose mean token log-probability is below `min_confidence` escalates to the
    next model of the cascade.
    """

    default_model: str | None = None
    default_quality_ratio: float = 0.9
    good_enough: float = 0.95
    min_confidence: float = -1.0
    upstreams: tuple[UpstreamSpec, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.default_quality_ratio <= 1 or not 0 < self.good_enough <= 1:
            raise ValueError("default_quality_ratio must be in [0, 1] and good_enough in (0, 1]")
        names = [u.name for u in self.upstreams]
        if len(set(names)) != len(names) or {"default", "auto"} & set(names):
            raise ValueError("upstream names must be distinct and not 'default' or 'auto'")


@dataclass(frozen=True, slots=True)
class Config:
    """The whole settings tree: which models, how each engine is sized, and the server."""

    # Served when no `-m` is given: the instruction ladder that the default and `auto` choose among.
    models: tuple[str, ...] = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
    engine: EngineConfig = field(default_factory=EngineConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    caches: CacheLimits = field(default_factory=CacheLimits)
    billing: BillingConfig = field(default_factory=BillingConfig)
    batch: BatchLimits = field(default_factory=BatchLimits)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    limits: RequestLimits = field(default_factory=RequestLimits)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    data_dir: Path = Path(".data")


class EnvSettings(BaseSettings):
    """`MINIMILL_*` environment variables; unset ones fall back to the dataclass defaults."""

    model_config = SettingsConfigDict(env_prefix="MINIMILL_", extra="ignore")

    models: Annotated[list[str] | None, NoDecode] = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    api_keys: Annotated[list[str] | None, NoDecode] = None
    admin_keys: Annotated[list[str] | None, NoDecode] = None
    insecure_no_auth: bool | None = None
    max_body_bytes: int | None = None
    max_messages: int | None = None
    max_stop_chars: int | None = None
    max_logit_bias: int | None = None
    max_schema_bytes: int | None = None
    max_schema_depth: int | None = None
    max_schema_repeat: int | None = None
    kv_size: int | None = None
    max_seqs: int | None = None
    threads: int | None = Field(default=None, ge=1)
    step_tokens: int | None = None
    max_queue: int | None = None
    max_queue_delay: float | None = None
    kv_type: KVType | None = None
    retain_cells: int | None = None
    retain_ram: bool | None = None
    ram_tier_bytes: int | None = None
    disk_tier_bytes: int | None = None
    prefix_disk_bytes: int | None = None
    batch_step_tokens: int | None = None
    batch_idle_step_tokens: int | None = None
    batch_max_seqs: int | None = None
    speculation: SpecMethod | None = None
    spec_max_draft: int | None = None
    draft_model: str | None = None
    default_cache_ttl: float | None = None
    max_cache_ttl: float | None = None
    default_session_ttl: float | None = None
    max_session_ttl: float | None = None
    ledger_url: str | None = None
    max_file_bytes: int | None = None
    max_batch_lines: int | None = None
    min_group_prefix: int | None = None
    hardware_usd_per_hour: float | None = None
    margin: float | None = None
    price_input: float | None = None
    price_cached_input: float | None = None
    price_output: float | None = None
    price_cache_storage: float | None = None
    price_session_retention: float | None = None
    price_batch_discount: float | None = None
    default_model: str | None = None
    default_quality_ratio: float | None = None
    good_enough: float | None = None
    min_confidence: float | None = None
    upstreams: Annotated[list[str] | None, NoDecode] = None
    replicas: int | None = Field(default=None, ge=1)
    max_replicas: int | None = Field(default=None, ge=1)
    upscale_delay: float | None = Field(default=None, ge=0)
    downscale_delay: float | None = Field(default=None, ge=0)
    ray_address: str | None = None
    replica_cpus: float | None = Field(default=None, gt=0)
    replica_gpus: float | None = Field(default=None, ge=0)
    replica_router: ReplicaRouter | None = None
    data_dir: Path | None = None

    @field_validator("models", "api_keys", "admin_keys", "upstreams", mode="before")
    @classmethod
    def _split_commas(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            separator = ";" if info.field_name == "upstreams" else ","  # an upstream spec has commas
            return [part.strip() for part in value.split(separator) if part.strip()]
        return value


def build_config(**overrides: object) -> Config:
    """Merge flags (`overrides`, None = not given) over `MINIMILL_*` env over defaults."""
    merged: dict[str, Any] = {k: v for k, v in EnvSettings().model_dump().items() if v is not None}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    if merged.get("draft_model") and not merged.get("speculation"):  # a draft model is given to be used
        merged["speculation"] = "draft"
    def section(kind: type[Any]) -> dict[str, Any]:
        return {k: v for k, v in merged.items() if k in kind.__dataclass_fields__}

    server_values = section(ServerConfig)
    for keys in ("api_keys", "admin_keys"):
        if keys in server_values:
            server_values[keys] = tuple(server_values[keys])
    server = ServerConfig(**server_values)
    top: dict[str, Any] = {"engine": EngineConfig(**section(EngineConfig)), "server": server,
                           "caches": CacheLimits(**section(CacheLimits)),
                           "billing": BillingConfig(**section(BillingConfig)),
                           "batch": BatchLimits(**section(BatchLimits)),
                           "limits": RequestLimits(**section(RequestLimits)),
                           "scale": ScaleConfig(**section(ScaleConfig))}
    routing_values = section(RoutingConfig)
    routing_values["upstreams"] = tuple(UpstreamSpec.parse(text, dict(os.environ))
                                        for text in merged.get("upstreams") or ())
    top["routing"] = RoutingConfig(**routing_values)
    if merged.get("models"):
        top["models"] = tuple(merged["models"])
    if merged.get("data_dir") is not None:
        top["data_dir"] = Path(merged["data_dir"])
    return Config(**top)
