"""Upstream models: a second real minimill process on another port, served through this one's API under
its own name, billed here at its own prices; its failures become clean OpenAI-shaped errors."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from minimill.evals import runner
from minimill.evals.results import ItemResult, ResultStore
from minimill.evals.suite import TUNE_SEED
from minimill.evals.suites import by_name
from tests.api.conftest import CliServer, Server, cli_server, free_port, serve

PEER_KEY = "sk-peer-secret-0123456789"
PEER_ARGS = ("--model", "smollm2-135m", "--kv-size", "2048", "--max-seqs", "4", "--threads", "1")
QUESTION = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer]:
    with cli_server(tmp_path_factory.mktemp("peer"), *PEER_ARGS, "--api-key", PEER_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def victim_port() -> int:
    return free_port()


def misbehaving_app() -> FastAPI:
    """A real HTTP peer that breaks the OpenAI contract in one way per path prefix."""
    app = FastAPI()

    @app.post("/{mode}/v1/chat/completions")
    async def answer(mode: str, request: Request) -> Response:
        body = await request.json()
        if mode == "list":
            return JSONResponse([1, 2, 3])
        if mode == "badusage":
            return JSONResponse({"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": "x"}})
        if mode == "leaky":  # as OpenAI does: the refusal quotes (part of) the key
            return JSONResponse({"error": {"message": f"Incorrect API key provided: {PEER_KEY}"}}, status_code=401)
        if mode == "trickle":
            async def slowly() -> AsyncIterator[bytes]:
                for _ in range(100):
                    yield b" "
                    await asyncio.sleep(0.1)
            return StreamingResponse(slowly(), media_type="application/json")
        if mode == "garbage" and body.get("stream"):
            async def events() -> AsyncIterator[bytes]:
                yield b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'
                yield b"data: [1, 2]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({"error": {"message": "unexpected"}}, status_code=500)

    return app


@pytest.fixture(scope="module")
def misbehaving() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(misbehaving_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, peer: CliServer, victim_port: int,
          misbehaving: str) -> Iterator[Server]:
    os.environ["TEST_PEER_KEY"] = PEER_KEY
    os.environ["TEST_WRONG_KEY"] = "sk-wrong"
    try:
        yield from serve(tmp_path_factory.mktemp("front"), kv_size=2048, max_seqs=4, upstreams=[
            f"peer={peer.url}/v1,model=smollm2-135m,key-env=TEST_PEER_KEY,input=0.2,output=0.8",
            f"slow={peer.url}/v1,model=smollm2-135m,key-env=TEST_PEER_KEY,timeout=0.3",
            f"wrongkey={peer.url}/v1,model=smollm2-135m,key-env=TEST_WRONG_KEY",
            f"dead=http://127.0.0.1:{free_port()}/v1,model=smollm2-135m",
            f"victim=http://127.0.0.1:{victim_port}/v1,model=smollm2-135m",
            *(f"{mode}={misbehaving}/{mode}/v1,timeout=1,key-env=TEST_PEER_KEY"
              for mode in ("list", "badusage", "leaky", "trickle", "garbage"))])
    finally:
        del os.environ["TEST_PEER_KEY"], os.environ["TEST_WRONG_KEY"]


def test_upstreams_are_listed_with_their_prices(front: Server) -> None:
    cards = {m.id: m for m in front.client().models.list().data}
    assert {"smollm2-135m", "peer", "dead", "default", "auto"} <= set(cards)
    peer = cards["peer"].model_extra or {}
    assert cards["peer"].owned_by == "upstream" and peer["prices"]["input"] == 0.2 and peer["prices"]["output"] == 0.8


def test_an_upstream_answers_as_the_same_model_would_locally_and_is_billed_here(front: Server) -> None:
    client = front.client()
    local = client.chat.completions.create(model="smollm2-135m", messages=QUESTION, max_tokens=16, temperature=0)
    remote = client.chat.completions.create(model="peer", messages=QUESTION, max_tokens=16, temperature=0)
    assert remote.model == "peer"
    assert remote.choices[0].message.content == local.choices[0].message.content
    cost = (remote.usage.model_extra or {})["cost"]
    uncached = remote.usage.prompt_tokens - remote.usage.prompt_tokens_details.cached_tokens
    assert cost["input"] == pytest.approx(uncached * 0.2 / 1e6)
    assert cost["output"] == pytest.approx(remote.usage.completion_tokens * 0.8 / 1e6)
    usage = httpx.get(f"{front.url}/v1/usage").json()
    assert any(row["model"] == "peer" and row["requests"] >= 1 for row in usage["data"])


def test_what_needs_a_local_engine_refuses_upstream_and_auto(front: Server) -> None:
    for model in ("peer", "auto"):
        refused = httpx.post(f"{front.url}/v1/caches", json={"model": model, "prompt": "A long instruction."})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_not_supported"


def test_an_upstream_streams_and_completes(front: Server) -> None:
    client = front.client()
    whole = client.chat.completions.create(model="peer", messages=QUESTION, max_tokens=16, temperature=0)
    chunks = list(client.chat.completions.create(model="peer", messages=QUESTION, max_tokens=16, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.model == "peer" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    text = client.completions.create(model="peer", prompt="The capital of France is", max_tokens=5, temperature=0)
    assert text.model == "peer" and text.choices[0].text


def test_upstream_refusals_and_failures_are_clean_errors(front: Server, caplog: pytest.LogCaptureFixture) -> None:
    client = front.client()
    with pytest.raises(openai.BadRequestError) as refused:  # the peer's own 400 is the caller's
        client.chat.completions.create(model="peer", messages=QUESTION, max_tokens=10**6)
    assert "upstream peer" in refused.value.message
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(openai.InternalServerError) as dead:
            client.chat.completions.create(model="dead", messages=QUESTION, max_tokens=4)
        assert dead.value.status_code == 502 and dead.value.code == "upstream_error"
        with pytest.raises(openai.InternalServerError) as wrong:
            client.chat.completions.create(model="wrongkey", messages=QUESTION, max_tokens=4)
        assert wrong.value.status_code == 502 and "401" in wrong.value.message
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as slow:
            client.chat.completions.create(model="slow", messages=QUESTION, max_tokens=400, extra_body={
                "ignore_eos": True})
        assert slow.value.status_code == 504 and slow.value.code == "upstream_timeout"
        assert time.monotonic() - started < 10
        client.chat.completions.create(model="peer", messages=QUESTION, max_tokens=4)
    assert PEER_KEY not in caplog.text and "sk-wrong" not in caplog.text
    assert PEER_KEY not in repr(front.runtime.upstreams) and PEER_KEY not in repr(front.runtime.config)


def test_an_upstream_is_evaluated_by_the_same_suites(front: Server) -> None:
    store = ResultStore(front.runtime.config.data_dir / "evals" / "results")
    summary = asyncio.run(runner.run(runner.Endpoint(f"{front.url}/v1"), ["peer", "smollm2-135m"],
                                     [by_name("facts")], store, seed=TUNE_SEED, n=3))
    assert summary.answered == 6 and summary.failed == 0
    board = httpx.get(f"{front.url}/v1/evals").json()["models"]
    assert board["peer"]["suites"]["facts"]["n"] == 3
    # the same model behind the upstream scores the same, at the upstream's (higher) price
    assert board["peer"]["suites"]["facts"]["accuracy"] == board["smollm2-135m"]["suites"]["facts"]["accuracy"]
    assert board["peer"]["cost_per_item_usd"] > board["smollm2-135m"]["cost_per_item_usd"]


def test_auto_passes_over_failing_upstreams(front: Server, tmp_path: Path) -> None:
    # without eval results the cascade is every model by list price, the dearest (peer) last
    router = front.runtime.router
    kept = router.store, router.published
    router.store = router.published = ResultStore(tmp_path / "no-results")  # nor the published scoreboard
    router._board = None
    try:
        reply = front.client().chat.completions.create(model="auto", messages=QUESTION, max_tokens=4, temperature=0,
                                                       metadata={"grader": "regex:^NEVER$"}).model_dump()
    finally:
        (router.store, router.published), router._board = kept, None
    attempts = {a["model"]: a for a in reply["router"]["attempts"]}
    assert reply["model"] == "peer" and reply["router"]["cascade"][-1] == "peer"
    assert attempts["dead"]["reason"].startswith("skipped: upstream dead") and attempts["dead"]["cost"] == 0
    assert attempts["wrongkey"]["reason"].startswith("skipped: upstream wrongkey")
    assert "grader" in attempts["smollm2-135m"]["reason"]


def test_auto_streams_token_by_token_when_its_route_has_one_model(front: Server, tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results")
    for model in ("smollm2-135m", "peer"):  # equal scores: the cheaper model alone, nothing to escalate to
        store.append(ItemResult(model=model, suite="facts", version="1", seed=TUNE_SEED, item_id="f-0", score=1.0,
                                answer=""))
    router = front.runtime.router
    kept, router.store = router.store, store
    try:
        assert router.route("facts").cascade == ("smollm2-135m",)
        client = front.client()
        whole = client.chat.completions.create(model="smollm2-135m", messages=QUESTION, max_tokens=16, temperature=0)
        chunks = list(client.chat.completions.create(model="auto", messages=QUESTION, max_tokens=16, temperature=0,
                                                     stream=True, metadata={"task": "facts"}))
    finally:
        router.store = kept
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and all(c.model == "smollm2-135m" for c in chunks)
    assert "".join(pieces) == whole.choices[0].message.content


def test_an_upstream_that_breaks_the_contract_is_a_clean_error(front: Server, caplog: pytest.LogCaptureFixture) -> None:
    client = front.client()
    for model in ("list", "badusage"):
        with pytest.raises(openai.InternalServerError) as broken:
            client.chat.completions.create(model=model, messages=QUESTION, max_tokens=4)
        assert broken.value.status_code == 502 and broken.value.code == "upstream_error"
    with caplog.at_level(logging.DEBUG), pytest.raises(openai.InternalServerError) as leaky:
        client.chat.completions.create(model="leaky", messages=QUESTION, max_tokens=4)
    assert leaky.value.status_code == 502 and PEER_KEY not in str(leaky.value.body) and PEER_KEY not in caplog.text
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as trickled:  # a byte every 0.1 s never ends a 1 s timeout
        client.chat.completions.create(model="trickle", messages=QUESTION, max_tokens=4)
    assert trickled.value.status_code == 504 and time.monotonic() - started < 5
    stream = client.chat.completions.create(model="garbage", messages=QUESTION, max_tokens=4, stream=True)
    with pytest.raises(openai.APIError, match="unreadable event"):
        for _ in stream:
            pass


def _kill_soon(server: CliServer, after: float) -> threading.Thread:
    def kill() -> None:
        time.sleep(after)
        server.process.send_signal(signal.SIGKILL)

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


def test_an_upstream_killed_mid_request_is_a_clean_error(front: Server, tmp_path: Path, victim_port: int) -> None:
    client = front.client()
    with cli_server(tmp_path / "victim", *PEER_ARGS, port=victim_port) as victim:
        assert client.chat.completions.create(model="victim", messages=QUESTION, max_tokens=4).model == "victim"
        killer = _kill_soon(victim, 0.5)
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as broken:
            client.chat.completions.create(model="victim", messages=QUESTION, max_tokens=2000,
                                           extra_body={"ignore_eos": True})
        killer.join()
        assert broken.value.status_code == 502 and broken.value.code == "upstream_error"
        assert time.monotonic() - started < 30
    with cli_server(tmp_path / "victim2", *PEER_ARGS, port=victim_port) as victim:
        stream = client.chat.completions.create(model="victim", messages=QUESTION, max_tokens=2000, stream=True,
                                                extra_body={"ignore_eos": True})
        first = next(iter(stream))
        assert first.model == "victim"
        _kill_soon(victim, 0.0).join()
        with pytest.raises(openai.APIError, match="upstream victim"):
            for _ in stream:
                pass
    # the front server is unharmed
    assert client.chat.completions.create(model="smollm2-135m", messages=QUESTION, max_tokens=4).choices
