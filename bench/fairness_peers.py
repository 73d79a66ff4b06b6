"""Issue 13: tenant B's time to first token while tenant A floods, on minimill and on llama.cpp's llama-server.

    python -m bench.peers build && python -m bench.fairness_peers --slots 8 --samples 7

Same model file, same threads, same slots (`minimill serve --max-seqs SLOTS --api-key a --api-key b`, its
default `--max-queue-delay`; llama-server `-np SLOTS`, which has no tenants). B sends `--samples` short
streamed greedy chats one after another (8 tokens each): first on an idle server, then while A floods, in
two shapes:
- `requests`: A sends `--flood` streamed chats at once (48 tokens each, `ignore_eos`);
- `n16`: A sends `--flood-n` requests with `n`=16 and 128 tokens each (`ignore_eos`); llama-server answers one
  choice a request, so it gets 16 times as many single-choice requests: the same work.
B starts 2 s after the flood, so A's requests are queued and decoding. Reported per server and shape: B's
median idle TTFT, median TTFT under the flood, their ratio (the issue asks ≤ 2 on minimill), and what A got
(answered, refused). Writes bench/results/fairness-peers.json and prints a Markdown table.
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


async def first_token(client: httpx.AsyncClient, key: str, content: str, max_tokens: int,
                      n: int = 1) -> tuple[int, float | None]:
    """One streamed greedy chat as tenant `key`: its status and the seconds to its first content token. Sent
    again once if the server closed a kept-alive connection before answering (llama-server does that)."""
    try:
        return await _first_token(client, key, content, max_tokens, n)
    except httpx.RemoteProtocolError:
        return await _first_token(client, key, content, max_tokens, n)


async def _first_token(client: httpx.AsyncClient, key: str, content: str, max_tokens: int,
                       n: int) -> tuple[int, float | None]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": content}],
                            "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True}
    if n > 1:
        body["n"] = n
    started = time.monotonic()
    async with client.stream("POST", "/v1/chat/completions", json=body,
                             headers={"authorization": f"Bearer {key}"}) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, None
        ttft = None
        async for line in response.aiter_lines():
            compact = line.replace(" ", "")
            if ttft is None and line.startswith("data: {") and '"content":' in compact \
                    and '"content":""' not in compact:
                ttft = time.monotonic() - started
        return 200, ttft


async def tenant_b(client: httpx.AsyncClient, samples: int, tag: str) -> list[float]:
    """B's TTFTs, one request after another."""
    out = []
    for i in range(samples):
        _, ttft = await first_token(client, "b", f"Say hello to visitor {tag}-{i}.", 8)
        if ttft is not None:
            out.append(ttft)
    return out


async def shape(url: str, flood: list[tuple[str, int, int]], samples: int) -> dict[str, Any]:
    """B idle, then B while A sends `flood` ((content, max_tokens, n) each, all at once)."""
    async with httpx.AsyncClient(base_url=url.removesuffix("/v1"), timeout=1800,
                                 limits=httpx.Limits(max_connections=len(flood) + 16)) as client:
        await first_token(client, "b", "Warm up.", 4)
        idle = await tenant_b(client, samples, "idle")
        tasks = [asyncio.create_task(first_token(client, "a", content, tokens, n)) for content, tokens, n in flood]
        await asyncio.sleep(2.0)
        loaded = await tenant_b(client, samples, "loaded")
        outcomes = await asyncio.gather(*tasks)
    statuses = Counter(status for status, _ in outcomes)
    idle_s, loaded_s = statistics.median(idle), statistics.median(loaded)
    return {"b_idle_ttft_s": idle, "b_loaded_ttft_s": loaded, "b_idle_median_s": round(idle_s, 3),
            "b_loaded_median_s": round(loaded_s, 3), "ratio": round(loaded_s / idle_s, 2),
            "a_statuses": dict(statuses)}


def floods(args: argparse.Namespace, choices_per_request: bool) -> dict[str, list[tuple[str, int, int]]]:
    """A's two flood shapes; `choices_per_request`: the server answers `n` > 1 in one request."""
    poem = [(f"Write a poem about the number {i}.", 48, 1) for i in range(args.flood)]
    story = "Tell a long story about a lighthouse keeper."
    n16 = ([(story, 128, 16)] * args.flood_n if choices_per_request
           else [(f"{story} ({i})", 128, 1) for i in range(16 * args.flood_n)])
    return {"requests": poem, "n16": n16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--flood", type=int, default=200)
    parser.add_argument("--flood-n", type=int, default=4)
    parser.add_argument("--servers", nargs="+", default=["minimill", "llama-server"],
                        choices=["minimill", "llama-server"])
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for server in args.servers:
        for name, flood in floods(args, choices_per_request=server == "minimill").items():
            port = peers.free_port()  # a fresh server per shape: nothing left over from the last flood
            if server == "minimill":
                command = peers.minimill_command(port, args.threads, ["--api-key", "a", "--api-key", "b"])
                command[command.index("--max-seqs") + 1] = str(args.slots)
            else:
                command = peers.llama_server_command(port, args.threads, MODEL)
                command[command.index("-np") + 1] = str(args.slots)
            with peers.running(command, port) as url:
                results[f"{server} {name}"] = asyncio.run(shape(url, flood, args.samples))
            print(f"{server} {name}: {results[f'{server} {name}']}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    command_line = (f"python -m bench.fairness_peers --threads {args.threads} --slots {args.slots} "
                    f"--samples {args.samples} --flood {args.flood} --flood-n {args.flood_n} "
                    f"--servers {' '.join(args.servers)}")
    (RESULTS / f"fairness-peers-{'-'.join(args.servers)}.json").write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "command": command_line, "results": results}, indent=2))
    print("| server, A's flood | B idle TTFT median s | B TTFT under flood median s | ratio | A's statuses |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['b_idle_median_s']} | {r['b_loaded_median_s']} | {r['ratio']} | {r['a_statuses']} |")


if __name__ == "__main__":
    main()
