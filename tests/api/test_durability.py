"""`minimill serve` as a process: caches outlive restarts, bad files are recomputed, SIGKILL loses no
finished request's ledger row, and the ledger can be a real PostgreSQL server."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
from sqlalchemy import create_engine, text

from minimill.api.auth import tenant_of
from minimill.billing.ledger import Ledger
from tests.api.conftest import cli_server

MODEL = "smollm2-135m"
SIZE = ("--threads", "2", "--kv-size", "2048", "--max-seqs", "8")
PREFIX = ("Instructions: reply with the city named in the message, in lower case, and nothing else. "
          "Examples follow. Message: I live in Paris. City: paris. Message: Rome is lovely. City: rome. ") * 2


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def metric(url: str, name: str, tier: str | None = None) -> float:
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith(name + "{") and (tier is None or f'tier="{tier}"' in line))


def ask(url: str, cache_id: str) -> Any:
    return client(url).completions.create(model=MODEL, prompt=PREFIX + " Message: Lyon at night. City:",
                                          max_tokens=6, temperature=0, extra_body={"cache_id": cache_id})


def test_cache_survives_restart_and_a_corrupted_file_is_recomputed(tmp_path: Path) -> None:
    with cli_server(tmp_path, *SIZE) as (url, _):
        cache = client(url).post("/caches", cast_to=object, body={"model": MODEL, "prompt": PREFIX, "ttl_seconds": 600})
        first = ask(url, cache["id"])  # type: ignore[index]
    assert first.usage.prompt_tokens_details.cached_tokens == cache["tokens"]  # type: ignore[index]

    with cli_server(tmp_path, *SIZE) as (url, _):  # nothing live, nothing in RAM: the KV comes from disk
        listed = client(url).get(f"/caches/{cache['id']}", cast_to=object)  # type: ignore[index]
        assert listed["tier"] == "disk"  # type: ignore[index]
        again = ask(url, cache["id"])  # type: ignore[index]
        assert again.usage.prompt_tokens_details.cached_tokens == cache["tokens"]  # type: ignore[index]
        assert again.choices[0].text == first.choices[0].text
        assert metric(url, "minimill_kv_tier_hits_total", "disk") == 1
        assert metric(url, "minimill_kv_tier_hit_rate", "disk") == 1.0
        assert metric(url, "minimill_kv_tier_bytes", "ram") > 0  # the disk hit moved up

    (path,) = (tmp_path / "kv").glob("*/*.kv")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x5A
    path.write_bytes(bytes(raw))
    with cli_server(tmp_path, *SIZE, "--retain-cells", "0") as (url, _):
        recomputed = ask(url, cache["id"])  # type: ignore[index]
        assert recomputed.choices[0].text == first.choices[0].text
        assert metric(url, "minimill_kv_tier_corrupt_files_total") == 1
        assert metric(url, "minimill_kv_tier_hits_total") == 0
        # billed as cached all the same: losing the KV was the server's fault, not the user's
        assert recomputed.usage.model_extra["cost"]["cached_input"] == first.usage.model_extra["cost"]["cached_input"]  # type: ignore[index]
    assert path.exists() and path.read_bytes() != bytes(raw)  # stored anew


def test_sigkill_mid_load_loses_no_finished_request(tmp_path: Path) -> None:
    finished: list[str] = []
    lock = threading.Lock()
    with cli_server(tmp_path, *SIZE, "--api-key", "k1") as (url, process):
        def one(i: int) -> None:
            try:
                reply = client(url, "k1").chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"Tell a story about the number {i}."}],
                    max_tokens=8 + (i % 5) * 8, temperature=0.7, seed=i)
            except (openai.APIError, httpx.HTTPError):
                return  # cut off by the kill: it never finished, so it owes no row
            with lock:
                finished.append(reply.id)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        deadline = time.monotonic() + 120
        while len(finished) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        for thread in threads:
            thread.join(timeout=60)
    assert 10 <= len(finished) < 40, "the kill should land mid-load"
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    rows = {entry.id for entry in ledger.entries(tenant_of("k1"))}
    ledger.close()
    assert set(finished) <= rows


def test_postgres_ledger_records_requests(tmp_path: Path, postgres_url: str) -> None:
    with cli_server(tmp_path, *SIZE, "--ledger-url", postgres_url) as (url, _):
        reply = client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                    max_tokens=4, temperature=0)
        usage = client(url).get("/usage", cast_to=object)
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT prompt_tokens, completion_tokens, cost_total FROM ledger WHERE id = :id"),
                           {"id": reply.id}).one()
    engine.dispose()
    assert (row.prompt_tokens, row.completion_tokens) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert float(row.cost_total) == reply.usage.model_extra["cost"]["total"]  # type: ignore[index]
    assert usage["total"]["requests"] >= 1  # type: ignore[index]
