"""Clients that leave at random points (queued, prefilling, mid-stream, mid-answer) free everything: afterwards
no sequence runs or waits, the KV holds nothing, no socket is left open, and what was computed is billed."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator

import httpx
import pytest

from minimill.api.auth import tenant_of
from tests.api.conftest import Server, serve

MODEL = "smollm2-135m"
KEY = "leaver"
# 300 keep CI's run short; bench/reliability.md records a run with MINIMILL_TEST_DISCONNECTS=1000.
DISCONNECTS = int(os.environ.get("MINIMILL_TEST_DISCONNECTS", "300"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("data"), kv_size=2048, max_seqs=8, retain_cells=0, api_keys=[KEY])


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


async def leave(client: httpx.AsyncClient, rng: random.Random, n: int) -> None:
    content = f"Tell me about the number {n}. " * rng.randint(1, 30)
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}],
            "max_tokens": 64, "temperature": 0.7, "seed": n, "ignore_eos": True, "stream": rng.random() < 0.6}
    how = rng.random()
    try:
        if body["stream"]:
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                stop_after = rng.randint(0, 40)
                count = 0
                async for _ in response.aiter_lines():
                    count += 1
                    if count >= stop_after:
                        break  # closing the stream closes the connection
        else:  # give up after a random time: while queued, prefilling or decoding
            await client.post("/v1/chat/completions", json=body, timeout=httpx.Timeout(how * 1.5))
    except httpx.HTTPError:
        pass


async def churn(url: str, count: int) -> None:
    rng = random.Random(1234)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)  # each request its own connection
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits,
                                 headers={"authorization": f"Bearer {KEY}"}) as client:
        pending: set[asyncio.Task[None]] = set()
        for n in range(count):
            pending.add(asyncio.create_task(leave(client, rng, n)))
            if len(pending) >= 48:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*pending)


def test_disconnects_at_random_points_leave_nothing_behind(server: Server) -> None:
    sockets_before = open_sockets()
    asyncio.run(churn(server.url, DISCONNECTS))
    deadline = time.monotonic() + 60
    while True:
        health = httpx.get(f"{server.url}/health").json()["models"][MODEL]
        if health["running"] == 0 and health["waiting"] == 0 and health["kv_used"] == 0:
            break
        assert time.monotonic() < deadline, health
        time.sleep(0.2)
    assert health["restarts"] == 0
    deadline = time.monotonic() + 30
    while open_sockets() > sockets_before + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert open_sockets() <= sockets_before + 2
    aborted = [e for e in server.runtime.meter.ledger.entries(tenant_of(KEY)) if e.id.endswith(":aborted")]
    assert aborted and all(e.prompt_tokens > 0 or e.completion_tokens > 0 for e in aborted)
    # The server still answers in full.
    reply = httpx.post(f"{server.url}/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"}, timeout=60,
                       json={"model": MODEL, "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 4})
    assert reply.status_code == 200
