"""Batch leases without a model: servers (replicas) sharing one ledger never run a batch's line twice; a batch
is owned (validated, finalized) by one runner at a time, a lapsed lease is taken over, and runners sharing a
batch take parts of its lines side by side."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from minimill.batch import runner as runner_module
from minimill.batch.files import FileStore
from minimill.batch.grouping import Group
from minimill.batch.runner import BatchRunner, LineResult, PreparedLine, cut_parts
from minimill.batch.store import BatchStore
from minimill.billing.ledger import Ledger
from minimill.billing.meter import Meter
from minimill.billing.prices import PriceBook, Prices
from minimill.config import BatchLimits
from minimill.engine.types import NamedKV, Usage
from minimill.errors import MinimillError

CHAT = "/v1/chat/completions"


class Executor:
    """Runs a line by counting it (under the runner's name) and answering a fixed completion."""

    def __init__(self, name: str, ran: Counter[tuple[str, str]], seconds: float = 0.01) -> None:
        self.name = name
        self.ran = ran
        self.seconds = seconds

    def prepare(self, tenant: str, endpoint: str, body: dict[str, Any]) -> PreparedLine[str]:
        content = body["messages"][0]["content"]
        return PreparedLine("m", (tuple(ord(c) for c in content),), content)

    async def execute(self, tenant: str, line: PreparedLine[str], request_id: str,
                      reuse: NamedKV | None) -> LineResult:
        self.ran[(self.name, line.call)] += 1
        await asyncio.sleep(self.seconds)
        body = {"object": "chat.completion", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
        return LineResult(200, body, request_id, Usage(3, 1, 0))

    def error(self, exc: MinimillError) -> tuple[int, dict[str, Any]]:
        return 400, {"error": {"message": exc.message, "type": "invalid_request_error", "param": None, "code": None}}


def _stores(tmp_path: Path) -> tuple[Ledger, BatchStore, FileStore]:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    return ledger, BatchStore(ledger), FileStore(ledger, tmp_path / "files", max_bytes=1 << 20)


def _runner(ledger: Ledger, store: BatchStore, files: FileStore, name: str,
            ran: Counter[tuple[str, str]], seconds: float = 0.01) -> BatchRunner[str]:
    zero = Decimal(0)
    meter = Meter(ledger, PriceBook(Prices(zero, zero, zero, zero, zero)))
    return BatchRunner(store, files, Executor(name, ran, seconds), meter, {}, BatchLimits(), runner_id=name)


def _batch(store: BatchStore, files: FileStore, lines: int) -> str:
    raw = "\n".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": CHAT,
                                "body": {"model": "m", "messages": [{"role": "user", "content": f"line {i}"}]}})
                    for i in range(lines)).encode()
    upload = files.put("t", "batch", "in.jsonl", raw)
    return store.create(tenant="t", endpoint=CHAT, input_file_id=upload.id, completion_window="24h",
                        window_seconds=3600, meta=None).id


def test_a_lease_is_held_by_one_runner_until_released_or_lapsed(tmp_path: Path) -> None:
    ledger, store, files = _stores(tmp_path)
    batch = _batch(store, files, 1)
    assert store.claim(batch, "a", now=100.0, seconds=30)
    assert not store.claim(batch, "b", now=120.0, seconds=30)  # a holds it
    assert store.claim(batch, "a", now=125.0, seconds=30)  # a renews: until 155
    assert not store.claim(batch, "b", now=150.0, seconds=30)
    assert store.claim(batch, "b", now=156.0, seconds=30)  # lapsed: b takes over
    assert not store.claim(batch, "a", now=157.0, seconds=30)  # so a's renewal fails
    store.release(batch, "a")  # not a's to release
    assert not store.claim(batch, "a", now=158.0, seconds=30)
    store.release(batch, "b")
    assert store.claim(batch, "a", now=159.0, seconds=30)
    ledger.close()


def test_two_runners_on_one_ledger_run_each_line_once(tmp_path: Path) -> None:
    ledger, store, files = _stores(tmp_path)
    ran: Counter[tuple[str, str]] = Counter()
    runners = [_runner(ledger, store, files, name, ran) for name in ("a", "b")]
    batches = [_batch(store, files, 12) for _ in range(3)]

    async def run() -> None:
        tasks = [asyncio.create_task(runner.run()) for runner in runners]
        deadline = time.monotonic() + 30
        while any(store.get(b).status != "completed" for b in batches):
            assert time.monotonic() < deadline, [store.get(b).status for b in batches]
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())
    lines = Counter(content for (_, content) in ran.elements())
    assert set(lines) == {f"line {i}" for i in range(12)}
    assert all(count == len(batches) for count in lines.values())  # each line of each batch ran once
    assert sum(ran.values()) == 36
    for batch in batches:
        assert len(store.results(batch, True)) == 12
        assert store.claim(batch, "c", now=time.time(), seconds=1)  # released when done
    ledger.close()


def test_a_lapsed_lease_of_a_dead_runner_is_taken_over(tmp_path: Path) -> None:
    ledger, store, files = _stores(tmp_path)
    batch = _batch(store, files, 4)
    assert store.claim(batch, "dead", now=time.time() - 31, seconds=30)  # its holder died 1 s ago
    ran: Counter[tuple[str, str]] = Counter()
    runner = _runner(ledger, store, files, "alive", ran)

    async def run() -> None:
        task = asyncio.create_task(runner.run())
        deadline = time.monotonic() + 20
        while store.get(batch).status != "completed":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    assert sum(ran.values()) == 4 and {name for name, _ in ran} == {"alive"}
    ledger.close()


def test_runners_sharing_a_batch_take_its_parts_side_by_side(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "PART_LINES", 4)
    ledger, store, files = _stores(tmp_path)
    ran: Counter[tuple[str, str]] = Counter()
    # Lines slow enough (0.3 s, 3 at a time) that the second runner's next pass (a second) finds parts left.
    runners = [_runner(ledger, store, files, name, ran, seconds=0.3) for name in ("a", "b")]
    batch = _batch(store, files, 24)

    async def run() -> None:
        tasks = [asyncio.create_task(runner.run()) for runner in runners]
        deadline = time.monotonic() + 30
        while store.get(batch).status != "completed":
            assert time.monotonic() < deadline, store.get(batch).status
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())
    assert Counter(content for (_, content) in ran.elements()) == Counter(f"line {i}" for i in range(24))
    by_runner = Counter(name for (name, _) in ran.elements())
    assert by_runner["a"] >= 4 and by_runner["b"] >= 4  # both ran parts of the one batch
    assert len(store.results(batch, True)) == 24
    assert store.held_parts(batch, "c", time.time()) == set()  # every part given back
    ledger.close()


def test_cut_parts_keeps_group_order_and_covers_every_line() -> None:
    groups = [Group("m", (1, 2), (5, 3, 9)), Group("m", (), (1,)), Group("m", (7,), (2, 4, 6, 8, 10))]
    cut = cut_parts(groups, 4)
    assert [len(part) for part in cut] == [4, 4, 1]
    assert [n for part in cut for n, _ in part] == [5, 3, 9, 1, 2, 4, 6, 8, 10]
    assert cut[0] == [(5, 0), (3, 0), (9, 0), (1, 1)]
