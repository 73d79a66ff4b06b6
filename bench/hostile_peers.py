"""Issue 13: the named hostile requests against minimill and llama.cpp's llama-server, same model file.

    python -m bench.peers build && python -m bench.hostile_peers

For each server and each case: the HTTP status (or "no answer" after the request timeout, or "dropped" when
the connection broke), whether the server process is still alive and healthy afterwards, and the slowest
`/health` answer while the case ran (a poller asks every 0.5 s). A server that died is started again for the
next case. Writes bench/results/hostile-peers.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import peers

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "smollm2-135m"


def chat(**fields: Any) -> dict[str, Any]:
    """A small greedy chat body with `fields` added."""
    return {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4,
            "temperature": 0, **fields}


def schema(json_schema: dict[str, Any]) -> dict[str, Any]:
    """`response_format` constraining the answer to `json_schema`."""
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": json_schema}}


def nested_schema_body(depth: int) -> bytes:
    """A chat body whose response_format is an array of arrays ... of strings, `depth` deep (written as text:
    Python's json module cannot encode it that deep)."""
    inner = '{"type":"array","items":' * depth + '{"type":"string"}' + "}" * depth
    head = json.dumps(chat())[:-1]
    return (head + ', "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": '
            + inner + "}}}").encode()


@dataclass(frozen=True, slots=True)
class Case:
    """One hostile request: a path and a body (a dict sent as JSON, or raw bytes)."""

    name: str
    path: str
    body: Callable[[], dict[str, Any] | bytes]


CASES = [
    Case("json_schema string maxLength 200,000", "/v1/chat/completions",
         lambda: chat(response_format=schema({"type": "string", "maxLength": 200_000}))),
    Case("json_schema pattern ^\\u0000$ (no token can match)", "/v1/chat/completions",
         lambda: chat(response_format=schema({"type": "string", "pattern": "^\\u0000$"}))),
    Case("json_schema nested 5,000 deep", "/v1/chat/completions", lambda: nested_schema_body(5_000)),
    Case("completions prompt [999999] with echo", "/v1/completions",
         lambda: {"model": MODEL, "prompt": [999_999], "echo": True, "max_tokens": 1}),
    Case("100,000 one-word messages", "/v1/chat/completions",
         lambda: chat(messages=[{"role": "user", "content": "word"}] * 100_000)),
    Case("17 MiB message", "/v1/chat/completions",
         lambda: chat(messages=[{"role": "user", "content": "a " * (17 << 19)}])),
    Case("body nested 100,000 deep", "/v1/chat/completions",
         lambda: (b'{"model":"' + MODEL.encode() + b'","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}")),
    Case("10,000 stop strings", "/v1/chat/completions", lambda: chat(stop=[f"s{i}" for i in range(10_000)])),
    Case("logit_bias with 200,000 entries", "/v1/chat/completions",
         lambda: chat(logit_bias={str(i): 1 for i in range(200_000)})),
    Case("max_tokens 10^9", "/v1/chat/completions", lambda: chat(max_tokens=10**9)),
    Case("temperature NaN-like 1e308, top_p -1", "/v1/chat/completions", lambda: chat(temperature=1e308, top_p=-1)),
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one case did to one server."""

    server: str
    case: str
    status: str
    seconds: float
    alive_after: bool
    slowest_health_s: float


class HealthPoller:
    """Asks `/health` every 0.5 s in a thread and keeps the slowest answer (a timeout counts as its length)."""

    def __init__(self, root: str, timeout: float = 10.0) -> None:
        self.root, self.timeout, self.slowest = root, timeout, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            started = time.monotonic()
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{self.root}/health", timeout=self.timeout)
            self.slowest = max(self.slowest, time.monotonic() - started)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def send(root: str, case: Case, timeout: float) -> tuple[str, float]:
    """The case's status as text, and how long it took."""
    body = case.body()
    started = time.monotonic()
    try:
        if isinstance(body, bytes):
            response = httpx.post(f"{root}{case.path}", content=body, timeout=timeout,
                                  headers={"content-type": "application/json"})
        else:
            response = httpx.post(f"{root}{case.path}", json=body, timeout=timeout)
        status = str(response.status_code)
    except httpx.TimeoutException:
        status = f"no answer in {timeout:.0f} s"
    except httpx.HTTPError as exc:
        status = f"dropped ({type(exc).__name__})"
    return status, time.monotonic() - started


def healthy(root: str) -> bool:
    """Whether the server answers /health with 200 within 10 s."""
    try:
        return httpx.get(f"{root}/health", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def run_all(name: str, command: Callable[[int], list[str]], timeout: float) -> list[Outcome]:
    """Every case against one kind of server, restarting it after a case that killed it."""
    outcomes: list[Outcome] = []
    pending = list(CASES)
    while pending:
        port = peers.free_port()
        with peers.running(command(port), port) as url:
            root = url.removesuffix("/v1")
            while pending:
                case = pending.pop(0)
                with HealthPoller(root) as poller:
                    status, seconds = send(root, case, timeout)
                alive = healthy(root)
                outcomes.append(Outcome(name, case.name, status, seconds, alive, poller.slowest))
                print(f"{name:12s} {case.name:50s} {status:24s} {seconds:7.1f} s alive={alive} "
                      f"health<={poller.slowest:.1f} s", flush=True)
                if not alive:
                    break  # a fresh server for the rest
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    """Markdown: one row per case, both servers side by side."""
    by = {(o.server, o.case): o for o in outcomes}

    def cell(o: Outcome) -> str:
        return f"{o.status}, {'up' if o.alive_after else '**down**'}, /health <= {o.slowest_health_s:.1f} s"

    lines = ["| case | minimill | llama-server |", "|---|---|---|"]
    lines += [f"| {c.name} | {cell(by['minimill', c.name])} | {cell(by['llama-server', c.name])} |" for c in CASES]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    args = parser.parse_args()
    outcomes = run_all("minimill", lambda port: peers.minimill_command(port, args.threads, []), args.timeout)
    outcomes += run_all("llama-server", lambda port: peers.llama_server_command(port, args.threads, MODEL),
                        args.timeout)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hostile-peers.json").write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "command": f"python -m bench.hostile_peers --threads {args.threads} --timeout {args.timeout:g}",
        "outcomes": [asdict(o) for o in outcomes]}, indent=2))
    print(table(outcomes))


if __name__ == "__main__":
    main()
