"""The engine in its own process: a SIGKILL of it costs only the requests in flight on it (503
`engine_restarted`, in-band for a stream), it comes back within seconds, the ledger keeps every row, disk-tier
caches survive, a request at two crashes is quarantined, and aborted requests are billed for what they computed."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minimill.api.auth import tenant_of
from tests.api.conftest import Server, serve

MODEL = "smollm2-135m"
KEY = "tenant-key"
PREFIX = [{"role": "system", "content": "You are a careful assistant who answers in one short sentence. " * 12}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("data"), kv_size=2048, max_seqs=4, api_keys=[KEY])


@pytest.fixture()
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120, headers={"authorization": f"Bearer {KEY}"}) as client:
        yield client


def chat(content: str, max_tokens: int = 8, **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, **fields}


def kill_engine(server: Server, after: float = 0.0) -> threading.Thread:
    """SIGKILL the engine process `after` seconds from now (in a thread)."""
    pid = server.runtime.engines[MODEL].pid()
    assert pid is not None

    def kill() -> None:
        time.sleep(after)
        os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


def wait_healthy(http: httpx.Client, restarts: int, timeout: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        response = http.get("/health")
        body = response.json()["models"][MODEL]
        if response.status_code == 200 and body["restarts"] >= restarts:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError("the engine did not come back")


def test_a_killed_engine_fails_only_its_requests_and_comes_back(server: Server, http: httpx.Client) -> None:
    before = http.post("/v1/chat/completions", json=chat("Name a colour."))
    assert before.status_code == 200
    rows_before = {e.id for e in server.runtime.meter.ledger.entries(tenant_of(KEY))}
    restarts = server.runtime.engines[MODEL].restarts

    killer = kill_engine(server, after=0.5)
    lost = http.post("/v1/chat/completions", json=chat("Count to a thousand.", max_tokens=1500, ignore_eos=True))
    killer.join()
    assert lost.status_code == 503
    assert lost.json()["error"]["code"] == "engine_restarted"
    back = wait_healthy(http, restarts + 1)
    assert back < 30

    after = http.post("/v1/chat/completions", json=chat("Name a colour."))
    assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"]
    assert after.json()["choices"][0]["message"]["content"] == before.json()["choices"][0]["message"]["content"]
    rows_after = {e.id for e in server.runtime.meter.ledger.entries(tenant_of(KEY))}
    assert rows_before <= rows_after and before.json()["id"] in rows_after
    assert server.metric("minimill_engine_process_restarts_total") >= 1


def test_a_stream_gets_an_in_band_error_then_done(server: Server, http: httpx.Client) -> None:
    restarts = server.runtime.engines[MODEL].restarts
    events: list[str] = []
    with http.stream("POST", "/v1/chat/completions",
                     json=chat("Tell a long story.", max_tokens=1500, ignore_eos=True, stream=True)) as response:
        assert response.status_code == 200
        killer = None
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if len(events) == 3:
                    killer = kill_engine(server)
        assert killer is not None
        killer.join()
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "engine_restarted"
    wait_healthy(http, restarts + 1)


def test_a_request_in_flight_at_two_crashes_is_quarantined(server: Server, http: httpx.Client) -> None:
    body = chat("Repeat the word crash for ever.", max_tokens=1500, ignore_eos=True)
    for attempt in range(2):
        restarts = server.runtime.engines[MODEL].restarts
        killer = kill_engine(server, after=0.5)
        assert http.post("/v1/chat/completions", json=body).status_code == 503, attempt
        killer.join()
        wait_healthy(http, restarts + 1)
    refused = http.post("/v1/chat/completions", json=body)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "request_quarantined"
    assert http.post("/v1/chat/completions", json=chat("Name a colour.")).status_code == 200


def test_a_disk_tier_cache_survives_the_engine(server: Server, http: httpx.Client) -> None:
    created = http.post("/v1/caches", json={"model": MODEL, "messages": PREFIX, "ttl_seconds": 600})
    assert created.status_code == 200, created.text
    cache = created.json()
    restarts = server.runtime.engines[MODEL].restarts
    kill_engine(server).join()
    wait_healthy(http, restarts + 1)
    reply = http.post("/v1/chat/completions", json={**chat("Hi."), "messages": [*PREFIX, {"role": "user",
                                                                                          "content": "Hi."}],
                                                    "cache_id": cache["id"]})
    assert reply.status_code == 200, reply.text
    details = reply.json()["usage"]["prompt_tokens_details"]
    assert details["cached_tokens"] == cache["tokens"] and details["cache_tier"] == "disk"


def test_an_aborted_stream_is_billed_for_what_it_computed(server: Server, http: httpx.Client) -> None:
    with http.stream("POST", "/v1/chat/completions",
                     json=chat("Tell a long story.", max_tokens=1000, ignore_eos=True, stream=True)) as response:
        rid = None
        for count, line in enumerate(response.iter_lines()):
            if line.startswith("data: ") and rid is None:
                rid = json.loads(line[6:])["id"]
            if count > 20:
                break  # leave mid-answer: the connection closes
    assert rid is not None
    deadline = time.monotonic() + 20
    rows: list[Any] = []
    while time.monotonic() < deadline and not rows:
        rows = server.runtime.meter.ledger.entries(tenant_of(KEY), id_prefix=f"{rid}:aborted")
        time.sleep(0.2)
    assert len(rows) == 1
    row = rows[0]
    assert row.prompt_tokens > 0 and 5 <= row.completion_tokens < 1000 and row.cost.total > 0


def test_worker_module_refuses_without_a_spec(tmp_path: Path) -> None:
    # The engine process's entry point is an ordinary module: without its server end it just exits.
    import socket
    import subprocess
    import sys

    ours, theirs = socket.socketpair()
    fd = theirs.detach()
    process = subprocess.Popen([sys.executable, "-m", "minimill.engine.worker", str(fd)], pass_fds=(fd,))
    os.close(fd)
    ours.close()
    assert process.wait(timeout=120) != 0


def test_a_batch_survives_a_killed_engine_with_every_line_once(server: Server) -> None:
    from tests.api.test_batch import chat_line, instructions, jsonl, lines_of, submit, wait

    client = server.client(KEY)
    system = instructions("crashes")
    lines = [chat_line(f"row-{n}", system, f"person {n}, city {n}, 19{n:02d}") for n in range(16)]
    batch = submit(client, jsonl(lines))
    deadline = time.monotonic() + 120
    while client.batches.retrieve(batch.id).request_counts.completed < 3:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    kill_engine(server).join()
    done = wait(client, batch.id)
    assert done.status == "completed"
    out = lines_of(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in out) == sorted(line["custom_id"] for line in lines)
    assert all(o["response"]["status_code"] == 200 for o in out) and not lines_of(client, done.error_file_id)
    rows = server.runtime.meter.ledger.entries(tenant_of(KEY), id_prefix=f"{batch.id}:")
    line_rows = [r.id for r in rows if ":prefix:" not in r.id]
    assert sorted(line_rows) == sorted(f"{batch.id}:{n}" for n in range(1, 17))
