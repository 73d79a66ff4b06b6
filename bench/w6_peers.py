"""W6 (issue 15): many interleaved chats from a plain client, on minimill and llama.cpp's llama-server.

    python -m bench.peers build && python -m bench.w6_peers --convs 32 --turns 6

`../shared/workloads/w6_convs.json`: each conversation a system line and user turns. Turn t of every
conversation is sent before turn t+1 of any, `--concurrency` (4) in flight; each turn resends the whole
history, earlier answers included; answers of 30 tokens (`ignore_eos`), greedy, streaming. Servers, same
model file and threads (bench/peers.py sizing: `minimill serve --kv-size 16384 --max-seqs 32`, llama-server
`-np 8 -c 16384` with its prompt cache):
- `minimill`: the plain client, no hints;
- `minimill+session`: the same requests, each naming its conversation's `session_id` (kept 3600 s: with 32
  conversations a turn comes back some 40 s later, past the 15-s default TTL);
- `llama-server`.
Reported per server: prompt tokens computed over new tokens (a turn's prompt minus the previous turn's
prompt and answer; minimill: prompt - cached, llama-server: its `timings.prompt_n`), wall seconds, mean
TTFT, and wall as a ratio to llama-server's. Writes bench/results/w6-peers.json; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench import client, peers

RESULTS = Path(__file__).resolve().parent / "results"
SERVERS = ("minimill", "minimill+session", "llama-server")


COUNTERS = ("minimill_engine_restarts_total", "minimill_engine_process_restarts_total",
            "minimill_ram_prefix_hits_total", "minimill_ram_prefix_hit_tokens_total",
            "minimill_ram_prefix_saves_total", "minimill_disk_prefix_saves_total", "minimill_disk_prefix_hits_total",
            "minimill_kv_tier_hits_total", "minimill_cached_tokens_total", "minimill_prompt_tokens_total")


def minimill_counters(base_url: str) -> dict[str, float]:
    """A few of minimill's counters after the run (empty for a server without them)."""
    response = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=30)
    totals: dict[str, float] = {}
    for line in response.text.splitlines() if response.status_code == 200 else []:
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in COUNTERS:
            totals[name.removeprefix("minimill_")] = totals.get(name.removeprefix("minimill_"), 0.0) + float(
                line.rsplit(" ", 1)[1])
    return totals


async def conversations(base_url: str, model: str, convs: list[dict[str, Any]], turns: int, concurrency: int,
                        answer_tokens: int, sessions: bool, shuffle_seed: int | None = None) -> dict[str, Any]:
    """Run W6 against one server; totals over every turn. With `shuffle_seed`, the conversations of each turn go
    in a seeded random order (still every turn t before any turn t+1)."""
    histories = [[{"role": "system", "content": c["system"]}] for c in convs]
    previous = [0] * len(convs)  # the last turn's prompt + answer tokens, per conversation
    computed = new = 0
    ttfts: list[float] = []
    started = time.perf_counter()
    async with client.api_client(base_url) as api:
        async def worker(pending: list[int], turn: int) -> None:
            nonlocal computed, new
            while pending:
                i = pending.pop(0)
                histories[i].append({"role": "user", "content": convs[i]["user_turns"][turn]})
                extra: dict[str, object] = {"ignore_eos": True}
                if sessions:  # kept for the whole run: a turn comes back after all other conversations' turns
                    extra.update(session_id=f"w6-{i}", session_ttl_seconds=3600)
                sample, text = await client.stream_chat(api, model, histories[i], answer_tokens, extra)
                histories[i].append({"role": "assistant", "content": text})
                computed += sample.computed
                new += sample.prompt_tokens - previous[i]
                previous[i] = sample.prompt_tokens + sample.completion_tokens
                ttfts.append(sample.ttft)

        for turn in range(turns):  # every conversation's turn before the next turn of any
            pending = list(range(len(convs)))
            if shuffle_seed is not None:
                random.Random(shuffle_seed + turn).shuffle(pending)
            await asyncio.gather(*(worker(pending, turn) for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return {**minimill_counters(base_url), "computed": computed, "new": new,
            "computed_per_new": round(computed / new, 3), "wall_s": round(wall, 1),
            "ttft_mean_s": round(statistics.fmean(ttfts), 3), "requests": len(ttfts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--convs", type=int, default=32)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=SERVERS)
    parser.add_argument("--serve-args", default="", help="extra `minimill serve` flags, space-separated")
    parser.add_argument("--retain-cells", nargs="*", type=int, default=[],
                        help="run the plain minimill once per value of --retain-cells (default: its own default)")
    args = parser.parse_args()
    spec = json.loads((client.WORKLOADS / "w6_convs.json").read_text())
    convs = spec["conversations"][: args.convs]
    answer_tokens = int(spec.get("max_tokens_per_answer", 30))
    results: dict[str, dict[str, Any]] = {}
    runs: list[tuple[str, str, list[str]]] = []  # (result name, server, extra serve flags)
    for server in args.servers:
        if server == "minimill" and args.retain_cells:
            runs += [(f"minimill --retain-cells {cells}", server, ["--retain-cells", str(cells)])
                     for cells in args.retain_cells]
        else:
            runs.append((server, server, []))
    for name, server, extra in runs:
        port = peers.free_port()
        if server == "llama-server":
            command = peers.llama_server_command(port, args.threads, args.model)
        else:
            command = peers.minimill_command(port, args.threads,
                                             ["-m", args.model, *args.serve_args.split(), *extra])
        with peers.running(command, port) as url:
            results[name] = asyncio.run(conversations(url, args.model, convs, args.turns, args.concurrency,
                                                      answer_tokens, sessions=server == "minimill+session"))
        print(f"{name}: {results[name]}", flush=True)
    peer = results.get("llama-server")
    for r in results.values():
        r["wall_vs_llama_server"] = round(r["wall_s"] / peer["wall_s"], 3) if peer else None
    RESULTS.mkdir(exist_ok=True)
    command_line = ("python -m bench.w6_peers " + " ".join(
        [f"--model {args.model}", f"--threads {args.threads}", f"--convs {args.convs}", f"--turns {args.turns}",
         f"--concurrency {args.concurrency}", "--servers " + " ".join(args.servers)]
        + ([f"--serve-args '{args.serve_args}'"] if args.serve_args else [])
        + (["--retain-cells " + " ".join(map(str, args.retain_cells))] if args.retain_cells else [])))
    (RESULTS / f"w6-peers-{args.model}-{args.convs}.json").write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "command": command_line, "results": results}, indent=2))
    print(f"\n{command_line}\n")
    print("| server | prompt tokens computed / new | wall s | wall / llama-server | TTFT mean s |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['computed_per_new']} | {r['wall_s']} | {r['wall_vs_llama_server']} | "
              f"{r['ttft_mean_s']} |")


if __name__ == "__main__":
    main()
