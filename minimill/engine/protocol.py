"""The typed messages between the server and an engine process (`client.py` ↔ `worker.py`).

Plain frozen dataclasses, pickled over one `multiprocessing` pipe. The server sends commands; the engine
process sends events. Requests are keyed by an integer the server picks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from minimill.config import EngineConfig
from minimill.engine.types import ChoiceDelta, EngineStats, GenerationRequest, KVTier, Usage
from minimill.kv.tiers import TierLimits


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """Everything an engine process needs to build its engine: the model file, the engine's sizes, and where
    its disk tier lives (None: RAM only)."""

    name: str
    model_path: Path
    config: EngineConfig
    tier_fingerprint: str
    tier_directory: Path | None
    tier_limits: TierLimits
    system_fingerprint: str = "fp_unknown"  # the model file and engine build, on every response
    draft_model_path: Path | None = None  # a smaller model with the same vocabulary, drafting (`--draft-model`)


# ---- commands (server → engine process) ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Submit:
    """Start generating `request` (its `on_abort` stays in the server) under `key`."""

    key: int
    request: GenerationRequest


@dataclass(frozen=True, slots=True)
class Abort:
    """The caller of `key` is gone: stop computing for it at the next step."""

    key: int


@dataclass(frozen=True, slots=True)
class Forget:
    """Drop a named KV entry from every tier."""

    name: str


@dataclass(frozen=True, slots=True)
class Extend:
    """Keep a named KV entry until `expires_at`."""

    name: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class TierOf:
    """Ask where a named KV entry is; answered by a `TierAnswer` with the same `call`."""

    call: int
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Close the engine and exit."""


Command = Submit | Abort | Forget | Extend | TierOf | Stop


# ---- events (engine process → server) -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Ready:
    """The engine is built: what the server needs to know about it."""

    n_ctx: int
    kv_total: int
    batch_slots: int


@dataclass(frozen=True, slots=True)
class Item:
    """One streamed item of request `key` (the last is its Usage)."""

    key: int
    item: ChoiceDelta | Usage


@dataclass(frozen=True, slots=True)
class Failed:
    """Request `key` ended with a domain error, named by its class in `minimill.errors`."""

    key: int
    error: str
    message: str
    param: str | None = None
    code: str | None = None
    retry_after: float = 1.0


@dataclass(frozen=True, slots=True)
class Aborted:
    """Request `key` was aborted after computing `usage` (for its `on_abort`)."""

    key: int
    request_id: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The engine's load and its Prometheus metrics, pushed a few times a second."""

    stats: EngineStats
    metrics: bytes


@dataclass(frozen=True, slots=True)
class TierAnswer:
    """The answer to `TierOf` number `call`."""

    call: int
    tier: KVTier | None


Event = Ready | Item | Failed | Aborted | Snapshot | TierAnswer
