"""The console's reads of the ledger: the request log, cache stats, live sessions, savings; the columns they
need, filled by the meter and added to a database made before them."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from minimill.billing.activity import (
    Activity,
    CacheStats,
    RequestFilter,
    SavingsRow,
    SessionRow,
    cost_without_reuse,
)
from minimill.billing.ledger import Ledger, LedgerEntry, add_missing_columns
from minimill.billing.ledger import ledger as ledger_table
from minimill.billing.meter import Meter
from minimill.billing.prices import Cost, PriceBook, Prices, request_cost
from minimill.engine.types import Usage
from minimill.errors import InvalidRequest, NotFound
from tests.billing.conftest import DAY1, DAY2

# USD per 1M tokens: round numbers, so every expected cost below is a short exact decimal
PRICES = Prices(input=Decimal(2), cached_input=Decimal("0.2"), output=Decimal(4), cache_storage=Decimal(1),
                session_retention=Decimal(3))
NEW_COLUMNS = ["latency_ms", "cache_id", "session", "kept_tokens", "kept_until"]




def row(rid: str, *, tenant: str = "a", model: str = "m1", kind: str = "chat.completion", at: float = DAY1,
        cost: Cost | None = None, **fields: object) -> LedgerEntry:
    counts = {"prompt_tokens": 1050, "cached_tokens": 1000, "completion_tokens": 20}
    priced = cost if cost is not None else request_cost(PRICES, **counts)
    return LedgerEntry(id=rid, tenant=tenant, model=model, kind=kind, cost=priced, created_at=at,
                       **{**counts, **fields})  # type: ignore[arg-type]


# ---- the request log ----------------------------------------------------------------------------------------
def test_requests_are_paged_newest_first_and_counted_per_tenant(ledger: Ledger) -> None:
    for i in range(5):
        ledger.record(row(f"r{i}", at=DAY1 + i))
    ledger.record(row("other", tenant="b", at=DAY1 + 10))
    activity = Activity(ledger)
    first = activity.requests("a", RequestFilter(), limit=2, offset=0)
    assert [e.id for e in first.entries] == ["r4", "r3"]
    assert (first.total, first.offset, first.limit, first.has_next, first.has_previous) == (5, 0, 2, True, False)
    middle = activity.requests("a", RequestFilter(), limit=2, offset=2)
    assert [e.id for e in middle.entries] == ["r2", "r1"] and middle.has_next and middle.has_previous
    last = activity.requests("a", RequestFilter(), limit=2, offset=4)
    assert [e.id for e in last.entries] == ["r0"] and not last.has_next and last.has_previous
    beyond = activity.requests("a", RequestFilter(), limit=2, offset=6)
    assert (beyond.entries, beyond.total, beyond.has_next) == ([], 5, False)
    assert [e.id for e in activity.requests("b", RequestFilter(), limit=10, offset=0).entries] == ["other"]
    assert activity.requests("nobody", RequestFilter(), limit=10, offset=0).total == 0
    assert first.entries[0] == row("r4", at=DAY1 + 4)  # read back whole


def test_requests_filter_by_model_kind_and_time(ledger: Ledger) -> None:
    ledger.record(row("r1", at=DAY1))
    ledger.record(row("r2", at=DAY1 + 60, model="m2"))
    ledger.record(row("r3", at=DAY1 + 120, kind="text_completion"))
    ledger.record(row("r4", at=DAY2))
    ledger.record(row("b1", tenant="b", at=DAY1 + 60, model="m2"))
    activity = Activity(ledger)

    def ids(chosen: RequestFilter) -> tuple[list[str], int]:
        page = activity.requests("a", chosen, limit=10, offset=0)
        return [e.id for e in page.entries], page.total

    assert ids(RequestFilter(model="m2")) == (["r2"], 1)
    assert ids(RequestFilter(kind="chat.completion")) == (["r4", "r2", "r1"], 3)
    assert ids(RequestFilter(since=DAY1 + 60, until=DAY2)) == (["r3", "r2"], 2)  # until is exclusive
    assert ids(RequestFilter(model="m1", kind="chat.completion", since=DAY1)) == (["r4", "r1"], 2)
    assert ids(RequestFilter(model="m3")) == ([], 0)
    first = activity.requests("a", RequestFilter(kind="chat.completion"), limit=1, offset=0)
    assert (first.total, first.has_next) == (3, True)
    last = activity.requests("a", RequestFilter(kind="chat.completion"), limit=1, offset=2)
    assert ([e.id for e in last.entries], last.has_next, last.has_previous) == (["r1"], False, True)  # ends exactly


def test_a_page_needs_a_positive_limit_and_no_negative_offset(ledger: Ledger) -> None:
    activity = Activity(ledger)
    with pytest.raises(InvalidRequest):
        activity.requests("a", RequestFilter(), limit=0, offset=0)
    with pytest.raises(InvalidRequest):
        activity.requests("a", RequestFilter(), limit=10, offset=-1)


def test_one_request_is_only_its_tenants(ledger: Ledger) -> None:
    written = row("r1", latency_ms=12.5, cache_id="cache_x", session="chat-1", kept_tokens=1070,
                  kept_until=DAY1 + 15)
    ledger.record(written)
    activity = Activity(ledger)
    assert activity.request("a", "r1") == written
    with pytest.raises(NotFound):
        activity.request("b", "r1")
    with pytest.raises(NotFound):
        activity.request("a", "r2")


def test_facets_are_the_tenants_distinct_models_and_kinds(ledger: Ledger) -> None:
    ledger.record(row("r1", model="m2"))
    ledger.record(row("r2", model="m1", kind="text_completion"))
    ledger.record(row("r3", model="m2"))
    ledger.record(row("b1", tenant="b", model="m9", kind="batch.chat.completion"))
    activity = Activity(ledger)
    assert activity.facets("a") == (["m1", "m2"], ["chat.completion", "text_completion"])
    assert activity.facets("nobody") == ([], [])


# ---- caches and sessions ------------------------------------------------------------------------------------
def test_cache_stats_count_hits_and_sum_storage(ledger: Ledger) -> None:
    storage = Cost(input=Decimal("0.001"), cache_storage=Decimal("0.5"))
    ledger.record(row("c1:create", kind="cache.create", cost=storage))
    ledger.record(row("c1:extend:1.5", kind="cache.extend", cost=Cost(cache_storage=Decimal("0.25"))))
    ledger.record(row("c10:create", kind="cache.create", cost=Cost(cache_storage=Decimal("0.125"))))
    ledger.record(row("r1", cache_id="c1"))
    ledger.record(row("r2", cache_id="c1"))
    ledger.record(row("r3", cache_id="c10"))
    ledger.record(row("b1", tenant="b", cache_id="c1"))  # a shared cache used by another tenant
    stats = Activity(ledger).cache_stats("a", ["c1", "c2"])
    assert stats == {"c1": CacheStats(hits=2, storage_cost=Decimal("0.75")),
                     "c2": CacheStats(hits=0, storage_cost=Decimal(0))}
    assert Activity(ledger).cache_stats("b", ["c1"]) == {"c1": CacheStats(hits=1, storage_cost=Decimal(0))}
    assert Activity(ledger).cache_stats("a", []) == {}


def test_sessions_are_the_live_ones_with_their_latest_keep(ledger: Ledger) -> None:
    now = DAY1 + 100
    kept = Cost(session_retention=Decimal("0.01"))
    ledger.record(row("s1-a", at=DAY1 + 10, session="s1", kept_tokens=100, kept_until=now + 5, cost=kept))
    ledger.record(row("s1-b", at=DAY1 + 20, model="m2", session="s1", kept_tokens=150, kept_until=now + 20,
                      cost=kept))
    ledger.record(row("s2", at=DAY1 + 30, session="s2", kept_tokens=50, kept_until=now - 1, cost=kept))  # expired
    ledger.record(row("s3-a", at=DAY1 + 40, session="s3", kept_tokens=50, kept_until=now + 50, cost=kept))
    ledger.record(row("s3-b", at=DAY1 + 50, session="s3"))  # its latest request kept nothing
    ledger.record(row("s4", at=DAY1 + 60, session="s4", kept_tokens=70, kept_until=now + 1, cost=kept))
    ledger.record(row("b", tenant="b", at=DAY1 + 70, session="s1", kept_tokens=9, kept_until=now + 9, cost=kept))
    ledger.record(row("plain", at=DAY1 + 80))
    assert Activity(ledger).sessions("a", now) == [
        SessionRow(session="s4", model="m1", requests=1, kept_tokens=70, kept_until=now + 1, last_at=DAY1 + 60,
                   retention_cost=Decimal("0.01")),
        SessionRow(session="s1", model="m2", requests=2, kept_tokens=150, kept_until=now + 20, last_at=DAY1 + 20,
                   retention_cost=Decimal("0.02")),
    ]
    assert [s.session for s in Activity(ledger).sessions("a", now + 10)] == ["s1"]
    assert Activity(ledger).sessions("a", now + 20) == []


# ---- savings ------------------------------------------------------------------------------------------------
def test_savings_reprice_cached_tokens_and_drop_cache_and_session_costs(ledger: Ledger) -> None:
    free_cache = Prices(input=Decimal(2), cached_input=Decimal(0), output=Decimal(4), cache_storage=Decimal(1),
                        session_retention=Decimal(3))
    book = PriceBook(PRICES, {"m3": free_cache})
    # 50 new tokens at $2/M + 1,000 cached at $0.2/M + 20 out at $4/M + a session kept for $0.001
    chat = request_cost(PRICES, prompt_tokens=1050, cached_tokens=1000, completion_tokens=20)
    assert chat == Cost(input=Decimal("0.0001"), cached_input=Decimal("0.0002"), output=Decimal("0.00008"))
    ledger.record(row("r1", cost=chat + Cost(session_retention=Decimal("0.001"))))
    ledger.record(row("c1:create", kind="cache.create",
                      cost=Cost(input=Decimal("0.003"), cache_storage=Decimal("0.01"))))
    # a batch line: every class at half price, 1,000 cached tokens
    line = request_cost(PRICES, prompt_tokens=1000, cached_tokens=1000, completion_tokens=0, batch=True)
    assert line == Cost(cached_input=Decimal("0.0001"))
    ledger.record(row("batch:1", kind="batch.chat.completion", model="m2", cost=line, prompt_tokens=1000,
                      completion_tokens=0))
    ledger.record(row("r2", model="m3", at=DAY2, cost=Cost(input=Decimal("0.0001")), prompt_tokens=550,
                      cached_tokens=500, completion_tokens=0))
    ledger.record(row("b1", tenant="b"))
    assert Activity(ledger).savings("a", book) == [
        # actual: 0.00138 + 0.013; without reuse: 0.0001 + 0.00008 + 1,000 x $2/M
        SavingsRow(day="2026-01-01", model="m1", actual=Decimal("0.01438"), without_reuse=Decimal("0.00218")),
        # the cached $0.0001 at 10x (input / cached_input): the batch discount stays
        SavingsRow(day="2026-01-01", model="m2", actual=Decimal("0.0001"), without_reuse=Decimal("0.001")),
        # a free cached price: 500 tokens at the full $2/M
        SavingsRow(day="2026-01-02", model="m3", actual=Decimal("0.0001"), without_reuse=Decimal("0.0011")),
    ]
    assert Activity(ledger).savings("a", book)[2].saved == Decimal("0.001")
    assert Activity(ledger).savings("nobody", book) == []


def test_without_reuse_reprices_exactly_by_a_ratio_that_is_not_a_power_of_ten() -> None:
    prices = Prices(input=Decimal(1), cached_input=Decimal("0.3"), output=Decimal(1), cache_storage=Decimal(1),
                    session_retention=Decimal(1))
    cost = request_cost(prices, prompt_tokens=1500, cached_tokens=1000, completion_tokens=0)
    entry = LedgerEntry(id="r", tenant="a", model="m", kind="chat.completion", cost=cost, prompt_tokens=1500,
                        cached_tokens=1000)
    assert cost_without_reuse(entry, prices) == Decimal("0.0015")  # 1,500 x $1/M, not 0.000999...9 + 0.0005
    assert cost_without_reuse(replace(entry, kind="cache.create"), prices) == 0


# ---- the new columns: filled by the meter, added to an older database --------------------------------------
def test_the_meter_records_latency_cache_session_and_the_kept_kv(ledger: Ledger) -> None:
    meter = Meter(ledger, PriceBook(PRICES))
    usage = Usage(prompt_tokens=1050, completion_tokens=20, cached_tokens=1000, kept_tokens=1000, kept_seconds=3600.0)
    cost = meter.charge(request_id="r1", tenant="a", model="m1", kind="chat.completion", usage=usage,
                        latency_ms=12.5, cache_id="cache_x", session="chat-1")
    meter.charge(request_id="r2", tenant="a", model="m1", kind="chat.completion", usage=Usage(10, 2, 0))
    first, second = Activity(ledger).requests("a", RequestFilter(), limit=10, offset=0).entries[::-1]
    assert (first.latency_ms, first.cache_id, first.session, first.kept_tokens) == (12.5, "cache_x", "chat-1", 1000)
    assert first.kept_until == first.created_at + 3600.0
    assert first.cost == cost and cost.session_retention == Decimal("0.003")  # 1,000 token-hours at $3/M
    assert (second.latency_ms, second.cache_id, second.session, second.kept_tokens, second.kept_until) == (
        None, None, None, 0, None)


# The first release's table; {money} is its exact decimal: text in SQLite, NUMERIC(38, 18) in PostgreSQL.
OLD_LEDGER = """CREATE TABLE ledger (
    id VARCHAR(96) NOT NULL PRIMARY KEY, tenant VARCHAR(64) NOT NULL, model VARCHAR(128) NOT NULL,
    kind VARCHAR(32) NOT NULL, created_at {float} NOT NULL, day VARCHAR(10) NOT NULL, prompt_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, stored_token_seconds {money} NOT NULL,
    cost_input {money} NOT NULL, cost_cached_input {money} NOT NULL, cost_output {money} NOT NULL,
    cost_cache_storage {money} NOT NULL, cost_session_retention {money} NOT NULL, cost_total {money} NOT NULL)"""
OLD_ROW = ("INSERT INTO ledger VALUES ('old', 'a', 'm1', 'chat.completion', 1767225600.0, '2026-01-01', 1050, 1000, "
           "20, '0', '0.0001', '0.0002', '0.00008', '0', '0', '0.00038')")  # PostgreSQL casts the quoted numbers


def test_a_ledger_made_before_the_new_columns_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # the table as the first release made it, with a row
        conn.execute(OLD_LEDGER.format(money="VARCHAR(64)", float="FLOAT"))
        conn.execute(OLD_ROW)
    opened = Ledger(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(ledger)")]
    assert columns[-5:] == NEW_COLUMNS
    (old,) = opened.entries("a")
    assert old == row("old", at=DAY1)  # the new fields read as their defaults
    written = row("new", at=DAY2, latency_ms=3.25, cache_id="cache_x", session="s", kept_tokens=7, kept_until=DAY2)
    opened.record(written)
    assert Activity(opened).request("a", "new") == written
    assert add_missing_columns(opened.engine, ledger_table) == []  # the second start changes nothing
    opened.close()
    assert [e.id for e in Ledger(f"sqlite:///{path}").entries("a")] == ["old", "new"]


def test_an_old_postgresql_ledger_gains_them(postgres_url: str) -> None:
    opened = Ledger(postgres_url)
    with opened.engine.begin() as conn:  # back to the first release's table, with a row
        conn.exec_driver_sql("DROP TABLE ledger")
        conn.exec_driver_sql(OLD_LEDGER.format(money="NUMERIC(38, 18)", float="DOUBLE PRECISION"))
        conn.exec_driver_sql(OLD_ROW)
    opened.close()
    migrated = Ledger(postgres_url)
    assert add_missing_columns(migrated.engine, ledger_table) == []
    (old,) = migrated.entries("a")
    assert old == row("old", at=DAY1)
    migrated.record(row("new", at=DAY2, session="s", kept_tokens=7, kept_until=DAY2 + 1))
    assert [s.session for s in Activity(migrated).sessions("a", DAY2)] == ["s"]
    with migrated.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM ledger")
    migrated.close()
