"""What a generation request reuses and keeps (cache, session), and billing it when it finishes."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from minimill.engine.types import ChoiceDelta, NamedKV, Usage
from minimill.errors import InvalidRequest
from minimill.kv.caches import CacheRecord
from minimill.runtime import Runtime
from minimill.serving.convert import usage_out
from minimill.serving.schemas import SamplingFields, UsageOut

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KVUse:
    """The named KV a request reads (`reuse`) and pins afterwards (`keep`), the cache it names, and the
    client's session key (`session_id` or `prompt_cache_key`) when it keeps a session."""

    reuse: NamedKV | None = None
    keep: NamedKV | None = None
    cache: CacheRecord | None = None
    session: str | None = None


def kv_use(runtime: Runtime, body: SamplingFields, tenant: str, model: str, prompts: Sequence[Sequence[int]],
           *, sessions: bool = True) -> KVUse:
    """Resolve `cache_id` (checked against every prompt) and `session_id` / `prompt_cache_key`
    (ignored without `sessions`: a batch line shares its group's prefix instead)."""
    cache = None
    if body.cache_id is not None:
        for prompt in prompts:
            cache = runtime.caches.reference(tenant, body.cache_id, model, prompt)
    session = body.session_key if sessions else None
    if session is None:
        if body.session_ttl_seconds is not None and sessions:
            raise InvalidRequest("session_ttl_seconds needs a session_id (or prompt_cache_key)",
                                 param="session_ttl_seconds")
        return KVUse(reuse=cache.named_kv() if cache else None, cache=cache)
    keep, _ = runtime.caches.session(tenant, session, body.session_ttl_seconds)
    return KVUse(reuse=cache.named_kv() if cache else keep, keep=keep, cache=cache, session=session)


def billed_cached(use: KVUse, usage: Usage, prompts: int) -> int | None:
    """Prompt tokens to bill as cached: a named cache's prefix always is, even if the server lost its KV
    and recomputed it (None: as the engine counted)."""
    if use.cache is None:
        return None
    return max(usage.cached_tokens, min(len(use.cache.tokens) * prompts, usage.prompt_tokens))


AbortBilling = Callable[[str, Usage], None]


def latency_ms(started: float) -> float:
    """Milliseconds since `started` (a `time.monotonic()` reading)."""
    return (time.monotonic() - started) * 1000


def aborted_billing(runtime: Runtime, *, tenant: str, model: str, kind: str, use: KVUse,
                    started: float) -> AbortBilling:
    """An engine request's `on_abort`: bill the tokens an aborted request computed, off the event loop
    (its caller is gone, so nobody awaits it; a ledger failure is logged). `started` is the monotonic time
    the request was accepted."""

    def bill(request_id: str, usage: Usage) -> None:
        work = functools.partial(runtime.meter.charge, request_id=f"{request_id}:aborted", tenant=tenant,
                                 model=model, kind=kind, usage=usage, latency_ms=latency_ms(started),
                                 cache_id=use.cache.id if use.cache else None, session=use.session)
        asyncio.get_running_loop().run_in_executor(None, work).add_done_callback(_log_failure)

    return bill


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not bill an aborted request: %s", future.exception())


async def charged(stream: AsyncIterator[ChoiceDelta | Usage], runtime: Runtime, *, request_id: str, tenant: str,
                  model: str, kind: str, use: KVUse, prompts: int,
                  started: float) -> AsyncIterator[ChoiceDelta | UsageOut]:
    """Pass deltas through; bill the final usage (written to the ledger before the client sees it), with the
    latency since `started` (the monotonic time the request was accepted), the cache and the session it used."""
    try:
        async for item in stream:
            if not isinstance(item, Usage):
                yield item
                continue
            cost = await asyncio.to_thread(runtime.meter.charge, request_id=request_id, tenant=tenant, model=model,
                                           kind=kind, usage=item, billed_cached=billed_cached(use, item, prompts),
                                           latency_ms=latency_ms(started),
                                           cache_id=use.cache.id if use.cache else None, session=use.session)
            yield usage_out(item, cost.as_dict())
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
