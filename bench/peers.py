"""Start and stop the servers being compared: minimill and llama.cpp's own llama-server.

llama-server is built from the llama.cpp sources vendored in the pinned llama-cpp-python sdist
(`python -m bench.peers build`), into bench/.peers/ (ignored by git).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

PEERS = Path(__file__).resolve().parent / ".peers"
LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
LLAMA_SERVER = PEERS / "llama.cpp-build" / "bin" / "llama-server"


def model_path(model: str = "smollm2-135m") -> Path:
    """A catalogue model's GGUF file (a parted one assembled once under bench/.peers/data): the same bytes
    every peer loads."""
    from minimill.models.catalogue import resolve

    return resolve(model, PEERS / "data").path


def build_llama_server(source: Path | None = None) -> Path:
    """Build llama-server (Release, CPU) from the sdist's vendor/llama.cpp, once."""
    if LLAMA_SERVER.exists():
        return LLAMA_SERVER
    if source is None:
        download = Path(tempfile.mkdtemp())
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
                        LLAMA_CPP_PYTHON, "-d", str(download)], check=True)
        (archive,) = download.glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(download, filter="data")
        source = next(download.glob("llama_cpp_python-*")) / "vendor" / "llama.cpp"
    build = PEERS / "llama.cpp-build"
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                    "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"], check=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", f"-j{os.cpu_count() or 2}"],
                   check=True)
    return LLAMA_SERVER


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running(command: list[str], port: int, health: str = "/health", cwd: Path | None = None,
            env: dict[str, str] | None = None) -> Iterator[str]:
    """Run a server process (in `cwd`, with `env`) until the block ends; yields its /v1 base URL once healthy."""
    PEERS.mkdir(exist_ok=True)
    log = (PEERS / f"{Path(command[0]).name}-{port}.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}{health}", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not become healthy")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def minimill_command(port: int, threads: int, extra: list[str]) -> list[str]:
    """`minimill serve` on `port`, sized like the peer (8 parallel sequences' worth of KV)."""
    return [sys.executable, "-m", "minimill.cli", "serve", "--port", str(port), "--threads", str(threads),
            "--kv-size", "16384", "--max-seqs", "32", "--log-level", "warning",
            *([] if {"-m", "--model"} & set(extra) else ["-m", "smollm2-135m"]), *extra]


def llama_server_command(port: int, threads: int, model: str = "smollm2-135m") -> list[str]:
    """llama-server with 8 slots, continuous batching and its prompt cache, same model file."""
    return [str(LLAMA_SERVER), "-m", str(model_path(model)), "--port", str(port), "--host", "127.0.0.1",
            "-np", "8", "-c", "16384", "-t", str(threads), "-tb", str(threads), "--cont-batching",
            "--cache-prompt", "--alias", model]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="build llama-server from the pinned sources")
    parser.add_argument("action", choices=["build"])
    parser.add_argument("--source", type=Path, default=None, help="an extracted vendor/llama.cpp to build")
    print(build_llama_server(parser.parse_args().source))
