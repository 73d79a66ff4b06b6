"""Real servers on 127.0.0.1: uvicorn in a thread over a real runtime, reached by the openai client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from minimill.api.app import create_app
from minimill.config import build_config
from minimill.runtime import Runtime


@dataclass
class Server:
    """A running server: its base URL and runtime."""

    url: str
    runtime: Runtime

    def client(self, api_key: str = "none") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60)

    def metric(self, name: str) -> float:
        """Sum of a Prometheus metric's samples, read over HTTP."""
        text = httpx.get(f"{self.url}/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(data_dir: Path, **overrides: object) -> Iterator[Server]:
    runtime = Runtime.build(build_config(threads=2, data_dir=data_dir, **overrides))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield Server(f"http://127.0.0.1:{port}", runtime)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        runtime.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The bundled default model, open to all."""
    yield from serve(tmp_path_factory.mktemp("data"), kv_size=4096, max_seqs=16)


@pytest.fixture(scope="session")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """API keys required, two sequences and a queue of two: easy to fill."""
    yield from serve(tmp_path_factory.mktemp("data"), kv_size=2048, max_seqs=2, max_queue=2,
                     api_keys=["key-one", "key-two"])


@pytest.fixture()
def client(server: Server) -> openai.OpenAI:
    return server.client()
