"""A soak of mixed traffic — W1 rows on a prompt cache, W2 chat sessions, W3 parallel streams, batches, and
cache churn — after which memory, file handles and threads are where they were. Its length is
MINIMILL_SOAK_SECONDS (60 in CI; bench/reliability.md records a 600-second run)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import CliServer, cli_server

MODEL = "smollm2-135m"
KEY = "soaker"
SECONDS = float(os.environ.get("MINIMILL_SOAK_SECONDS", "60"))
SHARED = Path(__file__).resolve().parents[3] / "shared" / "workloads"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer]:
    """`minimill serve` in its own process, so that its memory, files and threads are its own. A small RAM
    tier: sessions' KV there is bounded by it, so growth beyond it would be a leak."""
    with cli_server(tmp_path_factory.mktemp("data"), "--kv-size", "4096", "--max-seqs", "16", "--threads", "2",
                    "--api-key", KEY, "--ram-tier-bytes", str(16 << 20)) as srv:
        yield srv


def engine_pid(server_pid: int) -> int:
    """The engine process among the server's children."""
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if "minimill.engine.worker" in Path(f"/proc/{child}/cmdline").read_text():
                return int(child)
    raise AssertionError("no engine process")


def usage_of(pid: int) -> dict[str, int]:
    """Resident memory (KiB), open files and threads of a process."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = {key: value.split()[0] for key, _, value in (line.partition(":") for line in status) if value.split()}
    return {"rss_kib": int(fields["VmRSS"]), "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(fields["Threads"])}


RESETS: list[str] = []  # 503 engine_restarted answers seen (retried); see the note in test_a_soak...
BUSY: list[str] = []  # 429 answers seen (retried after their Retry-After, as the openai client does)


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST, retrying up to 3 times the documented transient answers: 503 `engine_restarted` (an engine reset)
    and 429 (overload, after its Retry-After)."""
    for _ in range(3):
        reply = await client.post(path, json=body)
        if reply.status_code == 429:
            BUSY.append(reply.text)
            await asyncio.sleep(min(10.0, float(reply.headers.get("retry-after", "1"))))
            continue
        if reply.status_code != 503 or reply.json()["error"]["code"] != "engine_restarted":
            return reply
        RESETS.append(reply.json()["error"]["message"])
    return reply


def workload_prefix() -> str:
    path = SHARED / "w1_prefix.txt"
    return path.read_text() if path.is_file() else "Clean the row: trim spaces, title-case names. " * 40


async def w1(client: httpx.AsyncClient, stop: float) -> int:
    prefix = [{"role": "system", "content": workload_prefix()}]
    made = await post(client, "/v1/caches", {"model": MODEL, "messages": prefix, "ttl_seconds": 600})
    assert made.status_code == 200, made.text
    cache = made.json()
    done = 0
    while done == 0 or time.monotonic() < stop:  # at least once, however slow the cache was to make
        reply = await post(client, "/v1/chat/completions", {
            "model": MODEL, "messages": [*prefix, {"role": "user", "content": f"row {done}, anna, 1999"}],
            "max_tokens": 12, "temperature": 0, "cache_id": cache["id"]})
        assert reply.status_code == 200, reply.text
        done += 1
    await client.delete(f"/v1/caches/{cache['id']}")
    return done


async def w2(client: httpx.AsyncClient, stop: float, chat: int) -> int:
    turns = 0
    while turns == 0 or time.monotonic() < stop:
        history: list[dict[str, str]] = []
        for turn in range(6):
            history.append({"role": "user", "content": f"Chat {chat}, turn {turn}: tell me something short."})
            reply = await post(client, "/v1/chat/completions", {
                "model": MODEL, "messages": history, "max_tokens": 16, "temperature": 0,
                "session_id": f"soak-{chat}-{turns}"})
            assert reply.status_code == 200, reply.text
            history.append({"role": "assistant", "content": reply.json()["choices"][0]["message"]["content"]})
            turns += 1
    return turns


async def w3(client: httpx.AsyncClient, stop: float) -> int:
    streams = 0
    while streams == 0 or time.monotonic() < stop:
        async def one(n: int) -> None:
            async with client.stream("POST", "/v1/chat/completions", json={
                    "model": MODEL, "messages": [{"role": "user", "content": f"Count to {n}."}], "max_tokens": 48,
                    "temperature": 0.5, "seed": n, "stream": True}) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if "engine_restarted" in line:
                        RESETS.append(line)
        await asyncio.gather(*(one(n) for n in range(8)))
        streams += 8
    return streams


async def batches(client: httpx.AsyncClient, stop: float) -> int:
    finished = 0
    while finished == 0 or time.monotonic() < stop:
        lines = [json.dumps({"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions",
                             "body": {"model": MODEL, "max_tokens": 6, "temperature": 0,
                                      "messages": [{"role": "user", "content": f"Say {n}."}]}}) for n in range(6)]
        uploaded = (await client.post("/v1/files", data={"purpose": "batch"},
                                      files={"file": ("b.jsonl", "\n".join(lines).encode())})).json()
        batch = (await client.post("/v1/batches", json={"input_file_id": uploaded["id"], "completion_window": "24h",
                                                        "endpoint": "/v1/chat/completions"})).json()
        while (state := (await client.get(f"/v1/batches/{batch['id']}")).json())["status"] not in (
                "completed", "failed", "cancelled", "expired"):
            await asyncio.sleep(0.5)
        assert state["status"] == "completed", state
        for file_id in (uploaded["id"], state["output_file_id"]):
            await client.delete(f"/v1/files/{file_id}")
        finished += 1
    return finished


async def soak(url: str, seconds: float) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"authorization": f"Bearer {KEY}"}) as client:
        stop = time.monotonic() + seconds
        counts = await asyncio.gather(w1(client, stop), w2(client, stop, 0), w2(client, stop, 1), w3(client, stop),
                                      batches(client, stop))
    return dict(zip(("w1_rows", "w2_turns_a", "w2_turns_b", "w3_streams", "batches"), counts, strict=True))


def test_a_soak_leaves_memory_files_and_threads_flat(server: CliServer) -> None:
    pids = {"server": server.process.pid, "engine": engine_pid(server.process.pid)}
    # Warm up: caches, pools, allocator arenas, lazily built state. The engine's RSS climbs for about two
    # minutes of this mix and then stays flat (+5 MiB over the next five, bench/reliability.md).
    asyncio.run(soak(server.url, min(150.0, SECONDS / 3)))
    before = {name: usage_of(pid) for name, pid in pids.items()}
    counts = asyncio.run(soak(server.url, SECONDS))
    time.sleep(2)
    after = {name: usage_of(pid) for name, pid in pids.items()}
    print(f"soak {SECONDS:g} s: {counts}; before {before}; after {after}; resets {len(RESETS)}, "  # noqa: T201
          f"429s {len(BUSY)}")  # the figures bench/reliability.md records (shown with -s)
    assert all(count > 0 for count in counts.values()), counts
    for process in ("server", "engine"):
        assert after[process]["fds"] <= before[process]["fds"] + 8, (process, before, after)
        # Thread pools (asyncio's default executor, anyio's workers) may still grow to their caps: bounded, not a leak.
        assert after[process]["threads"] <= before[process]["threads"] + 16, (process, before, after)
        assert after[process]["rss_kib"] <= before[process]["rss_kib"] + 96 * 1024, (process, before, after)
    assert engine_pid(server.process.pid) == pids["engine"]  # the process never died
    # Under this mix a llama_decode used to fail now and then (inconsistent positions): a slot copied from, or
    # loaded, in a step could be evicted for another sequence in the same step (tests/unit/test_scheduler.py).
    # Fixed; a reset would still be answered with 503 engine_restarted, so a few are tolerated, not expected.
    assert len(RESETS) <= 3, RESETS
    assert len(BUSY) <= 3, BUSY  # one tenant's mix, well inside the admission limit: a rare refusal at most
