"""Frozen settings tree. The only module that reads the environment (`MINIMILL_*`).

Precedence: command-line flags > environment > defaults. Built once by `serve` (or a test) and
passed down; nothing mutates it afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

KVType = Literal["f16", "bf16", "q8_0", "q4_0"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How one model's engine is sized: KV cells, sequences, threads and the per-step token budget."""

    kv_size: int = 8192
    max_seqs: int = 32
    threads: int | None = None
    step_tokens: int = 512
    max_queue: int = 256
    kv_type: KVType = "bf16"
    # Finished sequences stay in the KV as reusable prefixes while the cache holds at most this many
    # used cells; past it the least recently used are evicted. Attention in a unified KV spans the
    # used cells, so this bounds what retention costs every decode step. 0 retains nothing.
    retain_cells: int = 4096

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


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What `minimill serve` listens on and whom it lets in."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    """The whole settings tree: which models, how each engine is sized, and the server."""

    models: tuple[str, ...] = ("smollm2-135m",)
    engine: EngineConfig = field(default_factory=EngineConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    data_dir: Path = Path(".data")


class EnvSettings(BaseSettings):
    """`MINIMILL_*` environment variables; unset ones fall back to the dataclass defaults."""

    model_config = SettingsConfigDict(env_prefix="MINIMILL_", extra="ignore")

    models: Annotated[list[str] | None, NoDecode] = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    api_keys: Annotated[list[str] | None, NoDecode] = None
    kv_size: int | None = None
    max_seqs: int | None = None
    threads: int | None = Field(default=None, ge=1)
    step_tokens: int | None = None
    max_queue: int | None = None
    kv_type: KVType | None = None
    retain_cells: int | None = None
    data_dir: Path | None = None

    @field_validator("models", "api_keys", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


def build_config(**overrides: object) -> Config:
    """Merge flags (`overrides`, None = not given) over `MINIMILL_*` env over defaults."""
    merged: dict[str, Any] = {k: v for k, v in EnvSettings().model_dump().items() if v is not None}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    engine = EngineConfig(**{k: v for k, v in merged.items() if k in EngineConfig.__dataclass_fields__})
    server_values: dict[str, Any] = {k: v for k, v in merged.items() if k in ServerConfig.__dataclass_fields__}
    if "api_keys" in server_values:
        server_values["api_keys"] = tuple(server_values["api_keys"])
    server = ServerConfig(**server_values)
    top: dict[str, Any] = {"engine": engine, "server": server}
    if merged.get("models"):
        top["models"] = tuple(merged["models"])
    if merged.get("data_dir") is not None:
        top["data_dir"] = Path(merged["data_dir"])
    return Config(**top)
