"""Explicit prompt caches and chat sessions: names, owners and lifetimes on top of the engine's
pinned KV (live → RAM → disk).

A cache is a prefix a tenant paid to keep until `expires_at`; its record lives in a registry (the
ledger database, so it outlives a restart) and its KV in the engine's tiers under `cache:<id>`.
A session is a chat whose prompt and answer stay pinned for a short TTL under a name derived from
the tenant and the client's `session_id` / `prompt_cache_key`.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from minimill.config import CacheLimits
from minimill.engine.client import EngineClient
from minimill.engine.types import GenerationRequest, NamedKV, SamplingParams, Usage
from minimill.errors import InvalidRequest, NotFound

# The namespace of prefixes the server shares on purpose: readable by any tenant, but only by
# naming the cache, so automatic reuse can never reveal what another tenant sent.
SHARED_NAMESPACE = "*shared*"


@dataclass(frozen=True, slots=True)
class CacheRecord:
    """An explicit prompt cache: who owns it, which model, the prefix's token ids, and its lifetime."""

    id: str
    tenant: str
    model: str
    tokens: tuple[int, ...]
    shared: bool
    created_at: float
    expires_at: float

    @property
    def kv_name(self) -> str:
        """The name its KV is pinned under in the engine's tiers."""
        return f"cache:{self.id}"

    @property
    def namespace(self) -> str:
        """The prefix namespace its KV is indexed under."""
        return SHARED_NAMESPACE if self.shared else self.tenant

    def named_kv(self) -> NamedKV:
        """The engine's handle on this cache's KV."""
        return NamedKV(self.kv_name, self.namespace, self.expires_at, durable=True, tokens=self.tokens)


class CacheRegistry(Protocol):
    """Where cache records are kept (the ledger implements it)."""

    def get_cache(self, cache_id: str) -> CacheRecord | None:
        """The record, unless deleted."""

    def put_cache_record(self, record: CacheRecord, billed: Usage, storage_seconds: float) -> dict[str, float]:
        """Store a new record and bill its creation in one transaction; returns the cost in USD."""

    def extend_cache_record(self, record: CacheRecord, added_seconds: float) -> dict[str, float]:
        """Move a record's expiry and bill the added storage in one transaction; returns the cost."""

    def list_cache_records(self, tenant: str) -> list[CacheRecord]:
        """Records the tenant owns or may use (shared), not deleted."""

    def delete_cache_record(self, cache_id: str) -> None:
        """Mark a record deleted."""


class Caches:
    """Creates, finds, extends and deletes prompt caches; names chat sessions. One per runtime."""

    def __init__(self, engines: Mapping[str, EngineClient], registry: CacheRegistry, limits: CacheLimits | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.engines = engines
        self.registry = registry
        self.limits = limits or CacheLimits()
        self._now = clock

    def _ttl(self, ttl: float | None, default: float, limit: float, param: str) -> float:
        value = default if ttl is None else ttl
        if not 0 < value <= limit:
            raise InvalidRequest(f"{param} must be > 0 and at most {limit:g} seconds", param=param)
        return value

    async def create(self, *, tenant: str, model: str, tokens: Sequence[int], ttl: float | None,
                     shared: bool = False) -> tuple[CacheRecord, Usage, dict[str, float]]:
        """Prefill `tokens` once, pin their KV (durably) and record the cache; returns it and the usage."""
        engine = self.engines[model]
        seconds = self._ttl(ttl, self.limits.default_cache_ttl, self.limits.max_cache_ttl, "ttl_seconds")
        if len(tokens) < 1:
            raise InvalidRequest("the cached prefix is empty", param="prompt")
        now = self._now()
        record = CacheRecord(id=f"cache_{secrets.token_hex(12)}", tenant=tenant, model=model, tokens=tuple(tokens),
                             shared=shared, created_at=now, expires_at=now + seconds)
        request = GenerationRequest(request_id=record.id, prompt_tokens=record.tokens,
                                    params=SamplingParams(max_tokens=1, temperature=0.0),
                                    tenant=record.namespace, keep=record.named_kv())
        usage = await engine.run_to_end(request)
        billed = Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=0, cached_tokens=usage.cached_tokens)
        cost = await asyncio.to_thread(self.registry.put_cache_record, record, billed, seconds)
        return record, billed, cost

    def get(self, tenant: str, cache_id: str, *, own: bool = False) -> CacheRecord:
        """A live cache the tenant may use (or, with `own`, owns); NotFound otherwise."""
        record = self.registry.get_cache(cache_id)
        visible = record is not None and (record.tenant == tenant or (record.shared and not own))
        if record is None or not visible or record.expires_at <= self._now():
            raise NotFound(f"No cache with id '{cache_id}' exists", param="cache_id", code="cache_not_found")
        return record

    def list(self, tenant: str) -> list[CacheRecord]:
        """The tenant's live caches and the shared ones."""
        now = self._now()
        return [r for r in self.registry.list_cache_records(tenant) if r.expires_at > now]

    def extend(self, tenant: str, cache_id: str, ttl: float) -> tuple[CacheRecord, dict[str, float]]:
        """Keep an own cache `ttl` seconds from now (billing the added storage)."""
        record = self.get(tenant, cache_id, own=True)
        seconds = self._ttl(ttl, ttl, self.limits.max_cache_ttl, "ttl_seconds")
        now = self._now()
        # Whole milliseconds, so the billed storage is an exact decimal of what was added.
        added = round(max(0.0, now + seconds - record.expires_at), 3)
        updated = replace(record, expires_at=record.expires_at + added)
        cost = self.registry.extend_cache_record(updated, added)
        self.engines[record.model].extend(record.kv_name, updated.expires_at)
        return updated, cost

    def delete(self, tenant: str, cache_id: str) -> CacheRecord:
        """Delete an own cache and drop its KV from every tier."""
        record = self.get(tenant, cache_id, own=True)
        self.registry.delete_cache_record(cache_id)
        self.engines[record.model].forget(record.kv_name)
        return record

    def reference(self, tenant: str, cache_id: str, model: str, prompt: Sequence[int]) -> CacheRecord:
        """The cache a request names, checked against the request's model and prompt."""
        record = self.get(tenant, cache_id)
        if record.model != model:
            raise InvalidRequest(f"cache '{cache_id}' belongs to model '{record.model}', not '{model}'",
                                 param="cache_id")
        if tuple(prompt[: len(record.tokens)]) != record.tokens:
            raise InvalidRequest(f"the prompt does not start with the prefix of cache '{cache_id}' "
                                 f"({len(record.tokens)} tokens); send the cached prefix first, unchanged",
                                 param="cache_id", code="cache_prefix_mismatch")
        return record

    def session(self, tenant: str, session_id: str, ttl: float | None) -> tuple[NamedKV, float]:
        """The pinned entry of a chat session and its TTL in seconds."""
        if not session_id or len(session_id) > 256:
            raise InvalidRequest("session_id must be 1 to 256 characters", param="session_id")
        seconds = self._ttl(ttl, self.limits.default_session_ttl, self.limits.max_session_ttl, "session_ttl_seconds")
        digest = hashlib.sha256(f"{tenant}\0{session_id}".encode()).hexdigest()[:32]
        return NamedKV(f"session:{digest}", tenant, self._now() + seconds, ttl=seconds), seconds
