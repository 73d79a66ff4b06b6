"""The ledger on SQLite and on a real PostgreSQL server: exact money, grouping, caches, atomicity."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from minimill.billing.ledger import Ledger, LedgerEntry
from minimill.billing.prices import Cost, CostModel, request_cost, storage_cost
from minimill.errors import InvalidRequest, LedgerUnavailable, NotFound
from minimill.kv.caches import CacheRecord
from tests.billing.conftest import DAY1, DAY2


def entry(rid: str, tenant: str = "a", model: str = "m1", at: float = DAY1, **tokens: int) -> LedgerEntry:
    prices = CostModel().prices()
    counts = {"prompt_tokens": 1050, "cached_tokens": 1000, "completion_tokens": 20, **tokens}
    cost = request_cost(prices, **counts)
    return LedgerEntry(id=rid, tenant=tenant, model=model, kind="chat.completion", cost=cost, created_at=at, **counts)


def test_entries_round_trip_with_exact_decimals(ledger: Ledger) -> None:
    written = entry("r1")
    ledger.record(written)
    (read,) = ledger.entries("a")
    assert read == written
    assert read.cost.total == written.cost.total and isinstance(read.cost.total, Decimal)


def test_a_repeated_id_is_refused(ledger: Ledger) -> None:
    ledger.record(entry("r1"))
    with pytest.raises(InvalidRequest):
        ledger.record(entry("r1"))
    assert len(ledger.entries("a")) == 1


def test_usage_groups_by_day_and_model_per_tenant(ledger: Ledger) -> None:
    ledger.record(entry("r1", at=DAY1))
    ledger.record(entry("r2", at=DAY1 + 60))
    ledger.record(entry("r3", at=DAY2, model="m2", prompt_tokens=100, cached_tokens=0))
    ledger.record(entry("r4", tenant="b"))
    rows = ledger.usage("a")
    assert [(r.day, r.model, r.requests) for r in rows] == [("2026-01-01", "m1", 2), ("2026-01-02", "m2", 1)]
    first = rows[0]
    assert (first.prompt_tokens, first.cached_tokens, first.completion_tokens) == (2100, 2000, 40)
    assert first.cost == entry("r1").cost + entry("r2").cost
    assert [r.requests for r in ledger.usage("b")] == [1]
    assert ledger.usage("nobody") == []


def record(cache_id: str, tenant: str = "a", shared: bool = False, expires: float = DAY2) -> CacheRecord:
    return CacheRecord(id=cache_id, tenant=tenant, model="m1", tokens=(1, 2, 3), shared=shared, created_at=DAY1,
                       expires_at=expires)


def bill(rid: str) -> LedgerEntry:
    return LedgerEntry(id=rid, tenant="a", model="m1", kind="cache.create", cost=Cost(cache_storage=Decimal("0.5")))


def test_cache_records_and_their_bills(ledger: Ledger) -> None:
    ledger.put_cache(record("c1"), bill("c1:create"))
    ledger.put_cache(record("c2", tenant="b"), bill("c2:create"))
    ledger.put_cache(record("c3", tenant="b", shared=True), bill("c3:create"))
    assert ledger.get_cache("c1") == record("c1")
    assert [r.id for r in ledger.list_caches("a")] == ["c1", "c3"]
    ledger.extend_cache("c1", DAY2 + 10, bill("c1:extend"))
    assert ledger.get_cache("c1").expires_at == DAY2 + 10  # type: ignore[union-attr]
    ledger.delete_cache("c1")
    assert ledger.get_cache("c1") is None and [r.id for r in ledger.list_caches("a")] == ["c3"]
    # the bills stay after the delete
    assert sorted(e.id for e in ledger.entries("a")) == ["c1:create", "c1:extend", "c2:create", "c3:create"]


def test_cache_creation_and_its_bill_are_one_transaction(ledger: Ledger) -> None:
    ledger.record(bill("dup"))
    with pytest.raises(InvalidRequest):
        ledger.put_cache(record("c9"), bill("dup"))
    assert ledger.get_cache("c9") is None



def test_storage_costs_read_back_as_billed(ledger: Ledger) -> None:
    # token-seconds / 3600 repeats forever: the bill is cut to the column's scale before it is stored
    cost = storage_cost(CostModel().prices(), tokens=1000, seconds=1, kind="session") + storage_cost(
        CostModel().prices(), tokens=7, seconds=0.3, kind="cache")
    written = LedgerEntry(id="s1", tenant="a", model="m1", kind="session.retention", cost=cost, created_at=DAY1,
                          stored_token_seconds=Decimal("1000"))
    ledger.record(written)
    assert ledger.entries("a") == [written]
    assert ledger.usage("a")[0].cost.total == cost.total


def test_live_caches_and_a_cache_without_a_bill(ledger: Ledger) -> None:
    ledger.put_cache(record("old", expires=DAY1 + 10))
    ledger.put_cache(record("live", tenant="b", expires=DAY2))
    ledger.put_cache(record("gone", expires=DAY2))
    ledger.delete_cache("gone")
    assert [r.id for r in ledger.live_caches(DAY1 + 10)] == ["live"]
    assert {r.id for r in ledger.live_caches(DAY1)} == {"old", "live"}
    assert ledger.entries("a") == []


def test_a_deleted_cache_is_neither_extended_nor_billed(ledger: Ledger) -> None:
    ledger.put_cache(record("c1"), bill("c1:create"))
    ledger.delete_cache("c1")
    with pytest.raises(NotFound):
        ledger.extend_cache("c1", DAY2 + 10, bill("c1:extend"))
    with pytest.raises(NotFound):
        ledger.extend_cache("never", DAY2 + 10)
    assert [e.id for e in ledger.entries("a")] == ["c1:create"]


def test_a_repeated_cache_id_is_refused_and_not_billed(ledger: Ledger) -> None:
    ledger.put_cache(record("c1"), bill("c1:create"))
    with pytest.raises(InvalidRequest):
        ledger.put_cache(record("c1"), bill("c1:again"))
    assert [e.id for e in ledger.entries("a")] == ["c1:create"]


def test_threads_write_concurrently(ledger: Ledger) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: ledger.record(entry(f"r{i}", at=DAY1 + i)), range(64)))
    assert [e.id for e in ledger.entries("a")] == [f"r{i}" for i in range(64)]
    assert ledger.usage("a")[0].cost == sum((entry("r").cost for _ in range(64)), Cost())


def test_sqlite_commits_are_durable(tmp_path: Path) -> None:
    opened = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    with opened.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL: fsync at every commit
    opened.close()


WRITER = """
import sys, time
from minimill.billing.ledger import Ledger, LedgerEntry
from minimill.billing.prices import Cost
ledger = Ledger(sys.argv[1])
for i in range(100000):
    ledger.record(LedgerEntry(id=f"row-{i}", tenant="t", model="m", kind="chat.completion", cost=Cost()))
    print(f"row-{i}", flush=True)
"""


def test_committed_rows_survive_sigkill(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    acknowledged = [writer.stdout.readline().strip() for _ in range(40)]
    writer.kill()  # SIGKILL: no cleanup, no checkpoint
    writer.wait(timeout=30)
    acknowledged += [line.strip() for line in writer.stdout if line.strip()]
    survivors = {e.id for e in Ledger(url).entries("t")}
    assert set(acknowledged) <= survivors
    assert len(acknowledged) >= 40


def test_an_unreachable_database_is_a_clear_error_not_a_lost_bill(tmp_path: Path) -> None:
    opened = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    opened.engine.dispose()
    opened.engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:9/gone", connect_args={"connect_timeout": 2})
    with pytest.raises(LedgerUnavailable):  # the API answers 503, never a response without its bill
        opened.record(entry("r1"))
    opened.close()
