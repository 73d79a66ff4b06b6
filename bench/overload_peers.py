"""Issue 13: overload against minimill and llama.cpp's llama-server, same model file, same slots.

    python -m bench.peers build && python -m bench.overload_peers --requests 80 --slots 8

Both servers get `--requests` streamed greedy chat requests at once (`max_tokens` 48 with `ignore_eos`, so
each holds a slot for exactly 48 tokens): ten times what 8 slots run at a time. minimill runs with
`--max-seqs SLOTS` and its default `--max-queue-delay` (30 s), llama-server with `-np SLOTS`. Reported per
server: how many were answered 200 and how many refused (429 with Retry-After), the TTFT of the admitted
ones (median, p99, max), and the wall time of the whole burst. Writes bench/results/overload-peers.json and
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench import peers

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "smollm2-135m"


async def one(client: httpx.AsyncClient, n: int) -> tuple[int, float | None]:
    """One streamed request: its status and the seconds to its first content token (None if refused)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"Write a poem about the number {n}."}],
            "max_tokens": 48, "temperature": 0, "stream": True, "ignore_eos": True}
    started = time.monotonic()
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, None
        ttft = None
        async for line in response.aiter_lines():
            if ttft is None and line.startswith("data: {") and '"content":' in line.replace(" ", "") \
                    and '"content":""' not in line.replace(" ", ""):
                ttft = time.monotonic() - started
        return 200, ttft


async def burst(url: str, requests: int) -> dict[str, Any]:
    """All requests at once; their outcomes summarised."""
    async with httpx.AsyncClient(base_url=url.removesuffix("/v1"), timeout=900,
                                 limits=httpx.Limits(max_connections=requests + 8)) as client:
        await one(client, -1)  # warm-up
        started = time.monotonic()
        outcomes = await asyncio.gather(*(one(client, n) for n in range(requests)))
        wall = time.monotonic() - started
    ttfts = sorted(t for status, t in outcomes if status == 200 and t is not None)
    statuses = Counter(status for status, _ in outcomes)
    return {"statuses": dict(statuses), "admitted": statuses[200], "wall_s": round(wall, 1),
            "ttft_median_s": round(statistics.median(ttfts), 2) if ttfts else None,
            "ttft_p99_s": round(ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))], 2) if ttfts else None,
            "ttft_max_s": round(ttfts[-1], 2) if ttfts else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=80)
    parser.add_argument("--slots", type=int, default=8)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    port = peers.free_port()
    minimill = [*peers.minimill_command(port, args.threads, [])]
    minimill[minimill.index("--max-seqs") + 1] = str(args.slots)
    with peers.running(minimill, port) as url:
        results["minimill"] = asyncio.run(burst(url, args.requests))
    port = peers.free_port()
    server = peers.llama_server_command(port, args.threads, MODEL)
    server[server.index("-np") + 1] = str(args.slots)
    with peers.running(server, port) as url:
        results["llama-server"] = asyncio.run(burst(url, args.requests))
    RESULTS.mkdir(exist_ok=True)
    command = f"python -m bench.overload_peers --threads {args.threads} --requests {args.requests} --slots {args.slots}"
    (RESULTS / "overload-peers.json").write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "command": command, "results": results}, indent=2))
    print("| server | 200 | refused | TTFT median s | TTFT p99 s | TTFT max s | burst wall s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        refused = sum(count for status, count in r["statuses"].items() if status != 200)
        print(f"| {name} | {r['admitted']} | {refused} | {r['ttft_median_s']} | {r['ttft_p99_s']} | "
              f"{r['ttft_max_s']} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
