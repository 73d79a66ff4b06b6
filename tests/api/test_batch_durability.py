"""A batch survives SIGKILL: `minimill serve` killed mid-batch and started again resumes it, and every
line ends in exactly one of the output or error file, billed once (SQLite and PostgreSQL ledgers)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import openai
import pytest

from minimill.api.auth import tenant_of
from minimill.billing.ledger import Ledger
from tests.api.conftest import cli_server

MODEL = "smollm2-135m"
SIZE = ("--threads", "2", "--kv-size", "4096", "--max-seqs", "8", "--api-key", "k1")
LINES = 16


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="k1", max_retries=0, timeout=120)


def requests() -> bytes:
    system = "You number things. Count upwards from the number the user gives, in words, one per line. " * 4
    lines = [{"custom_id": f"line-{n}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": MODEL, "messages": [{"role": "system", "content": system},
                                                    {"role": "user", "content": f"Start at {n}."}],
                       "max_tokens": 40, "temperature": 0, "ignore_eos": True}} for n in range(LINES)]
    return "\n".join(json.dumps(line) for line in lines).encode()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_mid_batch_then_restart_finishes_every_line_exactly_once(tmp_path: Path, backend: str,
                                                                         request: pytest.FixtureRequest) -> None:
    url_args = ("--ledger-url", request.getfixturevalue("postgres_url")) if backend == "postgresql" else ()
    with cli_server(tmp_path, *SIZE, *url_args) as (url, process):
        uploaded = client(url).files.create(file=("lines.jsonl", requests()), purpose="batch")
        batch = client(url).batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                           completion_window="24h")
        deadline = time.monotonic() + 180
        while client(url).batches.retrieve(batch.id).request_counts.completed < 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    with cli_server(tmp_path, *SIZE, *url_args) as (url, _):
        before = client(url).batches.retrieve(batch.id)
        assert before.status == "in_progress" and 3 <= before.request_counts.completed < LINES, before
        deadline = time.monotonic() + 240
        while (done := client(url).batches.retrieve(batch.id)).status != "completed":
            assert done.status in ("in_progress", "finalizing") and time.monotonic() < deadline
            time.sleep(0.2)
        out = [json.loads(x) for x in client(url).files.content(done.output_file_id).content.decode().splitlines()]
    assert (done.request_counts.completed, done.request_counts.failed) == (LINES, 0) and done.error_file_id is None
    assert sorted(o["custom_id"] for o in out) == sorted(f"line-{n}" for n in range(LINES))  # each once
    ledger_url = url_args[1] if url_args else f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    ledger = Ledger(ledger_url)
    entries = ledger.entries(tenant_of("k1"), id_prefix=f"{batch.id}:")
    ledger.close()
    line_bills = sorted(e.id for e in entries if e.kind == "batch.chat.completion")
    assert line_bills == sorted(f"{batch.id}:{n + 1}" for n in range(LINES))  # billed once per line
    assert sum(e.kind == "batch.prefix" for e in entries) == 2  # the group prefix, once per server run
