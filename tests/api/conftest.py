"""Real servers on 127.0.0.1: uvicorn in a thread over a real runtime, reached by the openai client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from minimill.api.app import create_app
from minimill.config import build_config
from minimill.models.catalogue import SMALLEST
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


@dataclass
class CliServer:
    """`minimill serve` as a process: its URL, the process, and what it printed (once stopped)."""

    url: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[object]:  # `as (url, process)`
        return iter((self.url, self.process))


@contextmanager
def cli_server(data_dir: Path, *args: str, env: dict[str, str] | None = None,
               port: int | None = None) -> Iterator[CliServer]:
    """`minimill serve` in a subprocess until it answers /health; stopped (if still alive) at the end."""
    port = port or free_port()
    command = [sys.executable, "-m", "minimill.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
               "--log-level", "warning", *args]
    if "-m" not in args and "--model" not in args:  # the small model unless a test names one
        command += ["-m", SMALLEST]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "COLUMNS": "200", **(env or {})})
    server = CliServer(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
        server.output.append(process.communicate(timeout=30)[0])


def serve(data_dir: Path, **overrides: object) -> Iterator[Server]:
    runtime = Runtime.build(build_config(threads=2, data_dir=data_dir, **{"models": [SMALLEST], **overrides}))
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
