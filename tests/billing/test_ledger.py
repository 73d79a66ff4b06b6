"""The ledger on SQLite and on a real PostgreSQL server: exact money, grouping, caches, atomicity."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from minimill.billing.ledger import Ledger, LedgerEntry
from minimill.billing.prices import Cost, CostModel, request_cost
from minimill.errors import InvalidRequest
from minimill.kv.caches import CacheRecord

DAY1 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
DAY2 = DAY1 + 86_400


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = Ledger(url)
    with opened.engine.begin() as conn:  # the PostgreSQL database is shared by the session: start empty
        conn.exec_driver_sql("DELETE FROM ledger")
        conn.exec_driver_sql("DELETE FROM caches")
    yield opened
    opened.close()


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
