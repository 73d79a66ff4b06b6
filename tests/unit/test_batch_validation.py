"""Validating a batch without a model: a line whose preparation fails in an unexpected way costs that
line, never the batch (which would otherwise stay `validating` and block the batches behind it)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from minimill.batch.files import FileStore
from minimill.batch.runner import BatchRunner, LineResult, PreparedLine
from minimill.batch.store import BatchStore
from minimill.billing.ledger import Ledger
from minimill.billing.meter import Meter
from minimill.billing.prices import PriceBook, Prices
from minimill.config import BatchLimits
from minimill.engine.types import NamedKV
from minimill.errors import MinimillError

CHAT = "/v1/chat/completions"


class Executor:
    """Prepares every line, except that one whose content is "boom" hits a bug (not a MinimillError)."""

    def prepare(self, tenant: str, endpoint: str, body: dict[str, Any]) -> PreparedLine[None]:
        if body["messages"][0]["content"] == "boom":
            raise RecursionError("maximum recursion depth exceeded")
        return PreparedLine("m", ((1, 2, 3),), None)

    async def execute(self, tenant: str, line: PreparedLine[None], request_id: str,
                      reuse: NamedKV | None) -> LineResult:
        raise AssertionError("validation runs nothing")

    def error(self, exc: MinimillError) -> tuple[int, dict[str, Any]]:
        return 400, {"error": {"message": exc.message, "type": "invalid_request_error", "param": None, "code": None}}


def test_a_line_that_breaks_preparation_fails_alone(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    store, files = BatchStore(ledger), FileStore(ledger, tmp_path / "files", max_bytes=1 << 20)
    zero = Decimal(0)
    runner = BatchRunner(store, files, Executor(), Meter(ledger, PriceBook(Prices(zero, zero, zero, zero, zero))),
                         {}, BatchLimits())
    raw = "\n".join(json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT,
                                "body": {"model": "m", "messages": [{"role": "user", "content": content}]}})
                    for custom_id, content in (("a", "hi"), ("b", "boom"), ("c", "hi"))).encode()
    upload = files.put("t", "batch", "in.jsonl", raw)
    record = store.create(tenant="t", endpoint=CHAT, input_file_id=upload.id, completion_window="24h",
                          window_seconds=3600, meta=None)
    record, prepared = runner._validate(record)
    assert record.status == "in_progress" and record.total == 3
    assert prepared is not None and [p is not None for _, p in prepared] == [True, False, True]
    (row,) = [json.loads(r) for r in store.results(record.id, False)]
    assert row["custom_id"] == "b" and row["response"]["status_code"] == 500
    assert row["error"]["code"] == "server_error" and row["error"]["line"] == 2
    ledger.close()
