"""Billing a finished or aborted request records its latency, the cache it named and the session it kept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from minimill.billing.ledger import Ledger
from minimill.billing.meter import Meter
from minimill.billing.prices import PriceBook, Prices
from minimill.engine.types import ChoiceDelta, Usage
from minimill.kv.caches import CacheRecord
from minimill.runtime import Runtime
from minimill.serving.charging import KVUse, aborted_billing, charged
from minimill.serving.convert import usage_out

PRICES = Prices(input=Decimal(2), cached_input=Decimal("0.2"), output=Decimal(4), cache_storage=Decimal(1),
                session_retention=Decimal(3))
CACHE = CacheRecord(id="cache_x", tenant="a", model="m1", tokens=(1, 2, 3), shared=False, created_at=0.0,
                    expires_at=1e12)


def runtime_with(tmp_path: Path) -> tuple[Runtime, Ledger]:
    """The one part of a runtime that billing touches: its meter, on a fresh SQLite ledger."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    return cast(Runtime, SimpleNamespace(meter=Meter(ledger, PriceBook(PRICES)))), ledger


async def finished(usage: Usage) -> AsyncIterator[ChoiceDelta | Usage]:
    yield usage


def test_a_finished_request_is_billed_with_latency_cache_and_session(tmp_path: Path) -> None:
    runtime, ledger = runtime_with(tmp_path)
    usage = Usage(prompt_tokens=10, completion_tokens=2, cached_tokens=3, kept_tokens=12, kept_seconds=15.0)
    use = KVUse(cache=CACHE, session="chat-1")

    async def run() -> list[Any]:
        started = time.monotonic() - 0.25  # accepted a quarter of a second ago
        stream = charged(finished(usage), runtime, request_id="r1", tenant="a", model="m1", kind="chat.completion",
                         use=use, prompts=1, started=started)
        return [item async for item in stream]

    (out,) = asyncio.run(run())
    assert out.prompt_tokens_details.cached_tokens == 3
    (entry,) = ledger.entries("a")
    assert entry.latency_ms is not None and 250 <= entry.latency_ms < 60_000  # milliseconds, not seconds
    assert (entry.cache_id, entry.session, entry.kept_tokens) == ("cache_x", "chat-1", 12)
    assert entry.kept_until == entry.created_at + 15.0
    ledger.close()


def test_an_aborted_request_is_billed_with_latency_cache_and_session(tmp_path: Path) -> None:
    runtime, ledger = runtime_with(tmp_path)

    async def run() -> None:
        bill = aborted_billing(runtime, tenant="a", model="m1", kind="chat.completion",
                               use=KVUse(cache=CACHE, session="chat-1"), started=time.monotonic() - 0.25)
        bill("r1", Usage(prompt_tokens=10, completion_tokens=0, cached_tokens=0))
        for _ in range(500):  # billed off the event loop
            if ledger.entries("a"):
                return
            await asyncio.sleep(0.01)

    asyncio.run(run())
    (entry,) = ledger.entries("a")
    assert entry.id == "r1:aborted"
    assert entry.latency_ms is not None and 250 <= entry.latency_ms < 60_000
    assert (entry.cache_id, entry.session, entry.kept_tokens, entry.kept_until) == ("cache_x", "chat-1", 0, None)
    ledger.close()


def test_rejected_prediction_tokens_are_billed_and_reported_as_output(tmp_path: Path) -> None:
    runtime, ledger = runtime_with(tmp_path)
    usage = Usage(prompt_tokens=10, completion_tokens=20, cached_tokens=0, accepted_prediction_tokens=15,
                  rejected_prediction_tokens=6)
    cost = runtime.meter.charge(request_id="r1", tenant="a", model="m1", kind="chat.completion", usage=usage)
    assert cost.output == Decimal(4) * 26 / 1_000_000  # 20 in the answer and 6 refused, at the output price
    (entry,) = ledger.entries("a")
    assert entry.completion_tokens == 26
    out = usage_out(usage, cost.as_dict())
    assert (out.completion_tokens, out.total_tokens) == (26, 36)
    assert (out.completion_tokens_details.accepted_prediction_tokens,
            out.completion_tokens_details.rejected_prediction_tokens) == (15, 6)
    ledger.close()
