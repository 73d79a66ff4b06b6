"""Issue 4 benchmarks: prompt caches (W1), chat sessions (W2), KV tiers (W4) and KV element types.

    python -m bench.run_issue4 w1 --rows 32     # cache vs llama-server, 8 concurrent; billed tokens per row
    python -m bench.run_issue4 w2               # 20 turns: sessions, no sessions, llama-server
    python -m bench.run_issue4 w4 --prefixes 200 --queries 300   # RAM/disk hits vs recompute
    python -m bench.run_issue4 kv --rows 32     # W1 8 concurrent for each --kv-type, bytes per token

Each part starts its servers one after the other in the same run (same model file, same client),
writes bench/results/issue4-<part>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI

from bench import client, peers

MODEL = "smollm2-135m"
Report = dict[str, Any]


def _serve(args: argparse.Namespace, *extra: str) -> Callable[[int], list[str]]:
    data_dir = tempfile.mkdtemp(prefix="minimill-bench-")
    return lambda port: peers.minimill_command(port, args.threads, ["--data-dir", data_dir, *extra])


def _llama_server(args: argparse.Namespace) -> Callable[[int], list[str]]:
    peers.build_llama_server()
    return lambda port: peers.llama_server_command(port, args.threads)


def _run(command: Callable[[int], list[str]], work: Callable[[str], Any]) -> Any:
    port = peers.free_port()
    with peers.running(command(port), port) as url:
        return asyncio.run(work(url))


def w1_inputs(rows: int) -> tuple[str, list[str]]:
    """The W1 instruction prefix and the first `rows` rows."""
    prefix = (client.WORKLOADS / "w1_prefix.txt").read_text()
    lines = [line for line in (client.WORKLOADS / "w1_rows.txt").read_text().splitlines() if line.strip()]
    return prefix, lines[:rows]


async def w1_rows(url: str, rows: int, concurrency: int, use_cache: bool, model: str = MODEL) -> Report:
    """W1 with the prefix as a system message and the row as the user message; optionally via a cache."""
    api = client.api_client(url)
    prefix, lines = w1_inputs(rows)
    system = [{"role": "system", "content": prefix}]
    extra: dict[str, object] = {}
    cache_tokens = 0
    if use_cache:
        body = {"model": model, "messages": system, "ttl_seconds": 3600}
        cache = await api.post("/caches", cast_to=object, body=body)
        extra = {"cache_id": cache["id"]}  # type: ignore[index]
        cache_tokens = cache["tokens"]  # type: ignore[index]

    async def one(row: str) -> client.Sample:
        sample, _ = await client.stream_chat(api, model, [*system, {"role": "user", "content": row}], 24, extra)
        return sample

    samples, seconds = await client.run_concurrent(lines, concurrency, one)
    later = samples[1:] if not use_cache else samples
    report: Report = {"rows": len(samples), "seconds": seconds, "rows_per_s": len(samples) / seconds,
                      "computed_per_row": statistics.mean(s.computed for s in later),
                      "prompt_tokens_per_row": statistics.mean(s.prompt_tokens for s in later),
                      "cache_tokens": cache_tokens}
    if samples[0].cost is not None:
        prices = (await api.get("/prices", cast_to=object))["data"][model]  # type: ignore[index]
        billed = [s.cost["input"] + s.cost["cached_input"] for s in samples if s.cost]
        uncached = [s.prompt_tokens * prices["input"] / 1e6 for s in samples]
        report.update(billed_input_usd_per_row=statistics.mean(billed),
                      uncached_input_usd_per_row=statistics.mean(uncached),
                      billed_full_price_tokens_per_row=statistics.mean(s.prompt_tokens - (s.cached_tokens or 0)
                                                                       for s in samples))
    return report


def part_w1(args: argparse.Namespace) -> Report:
    """Cached W1 on minimill vs the same messages on llama-server, 8 concurrent."""
    results = {"minimill (cache_id)": _run(_serve(args), lambda url: w1_rows(url, args.rows, 8, True)),
               "llama-server": _run(_llama_server(args), lambda url: w1_rows(url, args.rows, 8, False))}
    ours, peer = results["minimill (cache_id)"], results["llama-server"]
    prompt, full = ours["prompt_tokens_per_row"], ours["billed_full_price_tokens_per_row"]
    billed, uncached = ours["billed_input_usd_per_row"], ours["uncached_input_usd_per_row"]
    lines = ["| figure | minimill (cache_id) | llama-server | ratio |", "|---|---|---|---|",
             f"| rows/s, 8 concurrent | {ours['rows_per_s']:.2f} | {peer['rows_per_s']:.2f} | "
             f"{ours['rows_per_s'] / peer['rows_per_s']:.2f}x |",
             f"| prompt tokens computed per row | {ours['computed_per_row']:.1f} | {peer['computed_per_row']:.1f} | |",
             f"| prompt tokens per row | {ours['prompt_tokens_per_row']:.1f} | {peer['prompt_tokens_per_row']:.1f} | |",
             "",
             f"minimill billed full-price input tokens per row: {full:.1f} of {prompt:.1f} ({prompt / full:.1f}x "
             f"fewer); input cost per row ${billed:.3g} vs ${uncached:.3g} uncached ({uncached / billed:.1f}x "
             f"cheaper, cached tokens at 0.1x); cache of {ours['cache_tokens']} tokens"]
    return {"results": results, "table": "\n".join(lines)}


async def w2_chat(url: str, session: bool, model: str = MODEL) -> Report:
    """W2: one conversation of 20 turns, the whole history resent each turn."""
    api = client.api_client(url)
    spec = json.loads((client.WORKLOADS / "w2_chat.json").read_text())
    history = [{"role": "system", "content": spec["system"]}]
    extra: dict[str, object] = {"session_id": "w2", "session_ttl_seconds": 60} if session else {}
    turns = []
    previous = 0
    for user in spec["user_turns"]:
        history.append({"role": "user", "content": user})
        sample, answer = await client.stream_chat(api, model, history, spec["max_tokens_per_answer"], extra)
        history.append({"role": "assistant", "content": answer})
        turns.append({"prompt_tokens": sample.prompt_tokens, "computed": sample.computed, "ttft": sample.ttft,
                      "new_tokens": sample.prompt_tokens - previous})
        previous = sample.prompt_tokens + sample.completion_tokens
    return {"turns": turns, "computed": sum(t["computed"] for t in turns), "new": sum(t["new_tokens"] for t in turns),
            "prompt": sum(t["prompt_tokens"] for t in turns),
            "ttft_20_over_1": turns[-1]["ttft"] / turns[0]["ttft"]}


def part_w2(args: argparse.Namespace) -> Report:
    """Sessions vs no sessions (no retention at all) vs llama-server's slot prompt cache."""
    results = {"minimill (session_id)": _run(_serve(args), lambda url: w2_chat(url, True)),
               "minimill (no session, --retain-cells 0)": _run(_serve(args, "--retain-cells", "0"),
                                                                lambda url: w2_chat(url, False)),
               "llama-server": _run(_llama_server(args), lambda url: w2_chat(url, False))}
    lines = ["| server | prompt tokens (20 turns) | computed | new | computed / new | TTFT turn 20 / turn 1 |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['prompt']} | {r['computed']} | {r['new']} | {r['computed'] / r['new']:.2f}x | "
                     f"{r['ttft_20_over_1']:.2f}x |")
    return {"results": results, "table": "\n".join(lines)}


def zipf_choices(n: int, k: int, s: float, seed: int) -> list[int]:
    """`k` draws from a Zipf(s) distribution over ranks 0..n-1."""
    weights = [1.0 / (rank + 1) ** s for rank in range(n)]
    return random.Random(seed).choices(range(n), weights=weights, k=k)


def distinct_prefix(i: int, words: int = 700) -> str:
    """A seeded pseudo-text of about 1,000 tokens, different for every i."""
    rng = random.Random(1000 + i)
    vocab = ["river", "copper", "lantern", "garden", "orbit", "harbor", "violet", "ledger", "summit", "thunder",
             "meadow", "cipher", "falcon", "quartz", "willow", "ember", "canyon", "mosaic", "glacier", "saffron"]
    return f"Document {i}. " + " ".join(rng.choice(vocab) + ("." if rng.random() < 0.1 else "") for _ in range(words))


async def first_token(api: AsyncOpenAI, prompt: str, extra: dict[str, object]) -> tuple[float, str | None, int]:
    """TTFT of one streamed completion; the tier its cache came from; prompt tokens computed."""
    start = time.perf_counter()
    ttft, tier, computed = None, None, 0
    stream = await api.completions.create(model=MODEL, prompt=prompt, max_tokens=1, temperature=0, stream=True,
                                          stream_options={"include_usage": True}, extra_body=extra)
    async for chunk in stream:
        if ttft is None and chunk.choices:
            ttft = time.perf_counter() - start
        if chunk.usage is not None:
            details = chunk.usage.prompt_tokens_details
            tier = (details.model_extra or {}).get("cache_tier") if details else None
            computed = chunk.usage.prompt_tokens - (details.cached_tokens if details else 0)
    return ttft or time.perf_counter() - start, tier, computed


async def w4_tiers(url: str, prefixes: int, queries: int) -> Report:
    """Create `prefixes` caches, then query them with Zipf reuse; TTFT by tier vs recompute."""
    api = client.api_client(url)
    texts = [distinct_prefix(i) for i in range(prefixes)]
    ids = []
    started = time.perf_counter()
    for text in texts:
        cache = await api.post("/caches", cast_to=object, body={"model": MODEL, "prompt": text, "ttl_seconds": 7200})
        ids.append(cache["id"])  # type: ignore[index]
    creation = time.perf_counter() - started
    by_tier: dict[str, list[float]] = {}
    for n, rank in enumerate(zipf_choices(prefixes, queries, 1.1, seed=7)):
        ttft, tier, _ = await first_token(api, texts[rank] + f" Question {n}: what is the first word?",
                                          {"cache_id": ids[rank]})
        by_tier.setdefault(tier or "miss", []).append(ttft)
    recompute = []
    for n in range(min(20, prefixes)):  # the same prompts with no cache named, on fresh prefixes: full prefill
        ttft, _, computed = await first_token(api, distinct_prefix(10_000 + n) + " Question: the first word?", {})
        recompute.append(ttft)
    metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
    tier_bytes = {line.split('tier="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                  for line in metrics.splitlines() if line.startswith("minimill_kv_tier_bytes{")}
    return {"prefixes": prefixes, "queries": queries, "creation_seconds": creation,
            "ttft": {tier: statistics.mean(v) for tier, v in by_tier.items()},
            "hits": {tier: len(v) for tier, v in by_tier.items()}, "recompute_ttft": statistics.mean(recompute),
            "tier_bytes": tier_bytes}


def part_w4(args: argparse.Namespace) -> Report:
    """Live KV for `--live-prefixes` prefixes (the retention cap), RAM for `--ram-prefixes`, the rest on disk."""
    per_prefix_cells, bytes_per_token = 1100, 23_053
    live = args.live_prefixes * per_prefix_cells
    extra = ["--kv-size", str(live + 4096), "--max-seqs", "32", "--retain-cells", str(live),
             "--ram-tier-bytes", str(args.ram_prefixes * per_prefix_cells * bytes_per_token)]
    result = _run(_serve(args, *extra), lambda url: w4_tiers(url, args.prefixes, args.queries))
    recompute = result["recompute_ttft"]
    lines = ["| tier | queries | share | mean TTFT (s) | TTFT / recompute |", "|---|---|---|---|---|"]
    for tier in ("live", "ram", "disk", "miss"):
        if tier in result["hits"]:
            ttft = result["ttft"][tier]
            lines.append(f"| {tier} | {result['hits'][tier]} | {result['hits'][tier] / result['queries']:.0%} | "
                         f"{ttft:.3f} | {ttft / recompute:.2f}x |")
    lines.append(f"| recompute (no cache) | 20 | | {recompute:.3f} | 1.00x |")
    return {"results": result, "table": "\n".join(lines)}


async def kv_bytes_per_token(url: str) -> float:
    """Bytes a cached prefix takes in the RAM tier, per token."""
    api = client.api_client(url)
    cache = await api.post("/caches", cast_to=object, body={"model": MODEL, "prompt": distinct_prefix(0)})
    metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
    ram = next(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("minimill_kv_tier_bytes{") and 'tier="ram"' in line)
    return ram / cache["tokens"]  # type: ignore[index, no-any-return]


def part_kv(args: argparse.Namespace) -> Report:
    """W1 at 8 concurrent (automatic prefix reuse) for each KV type, and llama-server once."""
    results: Report = {}
    for kv_type in ("bf16", "f16", "q8_0", "q4_0"):
        async def work(url: str) -> Report:
            w1 = await client.w1(client.api_client(url), MODEL, args.rows, 8)
            return {**w1, "bytes_per_token": await kv_bytes_per_token(url)}
        results[kv_type] = _run(_serve(args, "--kv-type", kv_type), work)
    results["llama-server"] = _run(_llama_server(args),
                                   lambda url: client.w1(client.api_client(url), MODEL, args.rows, 8))
    peer = results["llama-server"]["rows_per_s"]
    lines = ["| KV type | bytes/token | vs f16 | W1 rows/s (8 conc.) | vs llama-server (f16) |",
             "|---|---|---|---|---|"]
    f16 = results["f16"]["bytes_per_token"]
    for kv_type in ("bf16", "f16", "q8_0", "q4_0"):
        r = results[kv_type]
        lines.append(f"| {kv_type} | {r['bytes_per_token']:.0f} | {r['bytes_per_token'] / f16:.2f}x | "
                     f"{r['rows_per_s']:.2f} | {r['rows_per_s'] / peer:.2f}x |")
    lines.append(f"| llama-server f16 | | | {peer:.2f} | 1.00x |")
    return {"results": results, "table": "\n".join(lines)}


PARTS = {"w1": part_w1, "w2": part_w2, "w4": part_w4, "kv": part_kv}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=sorted(PARTS))
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prefixes", type=int, default=200)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ram-prefixes", type=int, default=48, help="W4: how many prefixes the RAM tier holds")
    parser.add_argument("--live-prefixes", type=int, default=16, help="W4: how many prefixes stay in the live KV")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    report = PARTS[args.part](args)
    out = args.out or Path(f"bench/results/issue4-{args.part}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()} {platform.processor()}"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine, "threads": args.threads,
                               "args": vars(args) | {"out": str(out)}, **report}, indent=2, default=str))
    print(report["table"])


if __name__ == "__main__":
    main()
