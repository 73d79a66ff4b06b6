"""The meter: turns counted tokens and kept KV into costs (price book) and writes them (ledger).

It is also the registry that prompt caches are kept in, so creating or extending a cache and
billing it happen in one transaction.
"""

from __future__ import annotations

import time
from decimal import Decimal

from minimill.billing.ledger import Ledger, LedgerEntry, UsageRow
from minimill.billing.prices import Cost, PriceBook, request_cost, storage_cost
from minimill.engine.types import Usage
from minimill.kv.caches import CacheRecord


class Meter:
    """Bills requests, caches and sessions; one per runtime."""

    def __init__(self, ledger: Ledger, prices: PriceBook) -> None:
        self.ledger = ledger
        self.prices = prices

    def charge(self, *, request_id: str, tenant: str, model: str, kind: str, usage: Usage,
               billed_cached: int | None = None, batch: bool = False, latency_ms: float | None = None,
               cache_id: str | None = None, session: str | None = None) -> Cost:
        """Bill a finished request: prompt (cached part at the cached price), output, and the
        retention of a session's KV for its TTL. `billed_cached` overrides the cached count (a named
        cache's prefix is billed as cached even when the server had to recompute it). `latency_ms`,
        `cache_id` and `session` are recorded with the bill, for the request log."""
        entry = self.bill(request_id=request_id, tenant=tenant, model=model, kind=kind, usage=usage,
                          billed_cached=billed_cached, batch=batch, latency_ms=latency_ms, cache_id=cache_id,
                          session=session)
        self.ledger.record(entry)
        return entry.cost

    def bill(self, *, request_id: str, tenant: str, model: str, kind: str, usage: Usage,
             billed_cached: int | None = None, batch: bool = False, latency_ms: float | None = None,
             cache_id: str | None = None, session: str | None = None) -> LedgerEntry:
        """The ledger entry of a finished request, priced but not recorded (see `charge`): for callers that
        record it in a transaction of their own. `batch` applies the batch discount to every token class.
        A session's kept KV is recorded as `kept_tokens` until now + `usage.kept_seconds`."""
        prices = self.prices.for_model(model)
        cached = usage.cached_tokens if billed_cached is None else billed_cached
        output = usage.billed_output_tokens  # rejected prediction tokens are billed as output, as OpenAI does
        cost = request_cost(prices, prompt_tokens=usage.prompt_tokens, cached_tokens=cached,
                            completion_tokens=output, batch=batch)
        if usage.kept_tokens:
            cost += storage_cost(prices, tokens=usage.kept_tokens, seconds=usage.kept_seconds, kind="session")
        now = time.time()
        return LedgerEntry(id=request_id, tenant=tenant, model=model, kind=kind, cost=cost,
                           prompt_tokens=usage.prompt_tokens, cached_tokens=cached, completion_tokens=output,
                           stored_token_seconds=usage.kept_tokens * Decimal(str(usage.kept_seconds)),
                           created_at=now, latency_ms=latency_ms, cache_id=cache_id, session=session,
                           kept_tokens=usage.kept_tokens,
                           kept_until=now + usage.kept_seconds if usage.kept_tokens else None)

    def usage(self, tenant: str) -> list[UsageRow]:
        """A tenant's totals by day and model."""
        return self.ledger.usage(tenant)

    # ---- the cache registry (kv.caches.CacheRegistry) -----------------------------------------
    def get_cache(self, cache_id: str) -> CacheRecord | None:
        """A cache record unless deleted."""
        return self.ledger.get_cache(cache_id)

    def list_cache_records(self, tenant: str) -> list[CacheRecord]:
        """The tenant's and the shared cache records."""
        return self.ledger.list_caches(tenant)

    def delete_cache_record(self, cache_id: str) -> None:
        """Mark a cache deleted."""
        self.ledger.delete_cache(cache_id)

    def put_cache_record(self, record: CacheRecord, billed: Usage, storage_seconds: float) -> dict[str, float]:
        """Store a cache, billing its prefill and its storage for the TTL, in one transaction."""
        prices = self.prices.for_model(record.model)
        cost = request_cost(prices, prompt_tokens=billed.prompt_tokens, cached_tokens=billed.cached_tokens,
                            completion_tokens=0)
        cost += storage_cost(prices, tokens=len(record.tokens), seconds=storage_seconds, kind="cache")
        entry = LedgerEntry(id=f"{record.id}:create", tenant=record.tenant, model=record.model, kind="cache.create",
                            cost=cost, prompt_tokens=billed.prompt_tokens, cached_tokens=billed.cached_tokens,
                            stored_token_seconds=len(record.tokens) * Decimal(str(storage_seconds)),
                            created_at=record.created_at)
        self.ledger.put_cache(record, entry)
        return cost.as_dict()

    def extend_cache_record(self, record: CacheRecord, added_seconds: float) -> dict[str, float]:
        """Move a cache's expiry, billing the added storage, in one transaction."""
        cost = storage_cost(self.prices.for_model(record.model), tokens=len(record.tokens), seconds=added_seconds,
                            kind="cache")
        now = time.time()
        entry = LedgerEntry(id=f"{record.id}:extend:{now:.6f}", tenant=record.tenant, model=record.model,
                            kind="cache.extend", cost=cost,
                            stored_token_seconds=len(record.tokens) * Decimal(str(added_seconds)),
                            created_at=now)
        self.ledger.extend_cache(record.id, record.expires_at, entry)
        return cost.as_dict()

