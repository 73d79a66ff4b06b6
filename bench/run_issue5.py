"""Issue 5 benchmark W5: the W1 rows as one Batch API batch vs the same rows online, same server, same run.

    python -m bench.run_issue5 --rows 256                     # all phases once
    python -m bench.run_issue5 --rows 256 --repeat 3 --out bench/results/issue5-w5-pairs.json

Three `minimill serve` processes with the same command, one after the other (fresh, so that no phase
inherits another's KV), each phase its own tenant:
1. online: the rows through /v1/chat/completions, 8 concurrent (the W1 client), rows/s;
2. batch: the same rows as one batch; rows/s from submission to completion; prompt tokens computed
   (engine counters), the group prefix computed once;
3. probes: online TTFT probes (a W1 row, a short unrelated chat, alternately, one after another) idle,
   then while the batch runs again: TTFT during the batch over idle TTFT.
Writes bench/results/issue5-w5.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI

from bench import client, peers

MODEL = "smollm2-135m"
MAX_TOKENS = 24
Report = dict[str, Any]


def rows_and_prefix(rows: int) -> tuple[str, list[str]]:
    """The W1 instruction prefix and the first `rows` rows."""
    prefix = (client.WORKLOADS / "w1_prefix.txt").read_text()
    lines = [line for line in (client.WORKLOADS / "w1_rows.txt").read_text().splitlines() if line.strip()]
    return prefix, lines[:rows]


def messages(prefix: str, row: str) -> list[dict[str, str]]:
    """A W1 row as chat: the instructions as the system message, the row as the user's."""
    return [{"role": "system", "content": prefix}, {"role": "user", "content": row}]


def computed_prompt_tokens(url: str) -> float:
    """Prompt tokens the engine has computed so far: admitted minus reused from a prefix."""
    text = httpx.get(url.removesuffix("/v1") + "/metrics").text

    def total(name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

    return total("minimill_prompt_tokens_total") - total("minimill_prefix_cached_tokens_total")


async def probe_ttfts(api: AsyncOpenAI, prefix: str, rows: list[str], count: int, stop: asyncio.Event | None = None,
                      pause: float = 0.5) -> dict[str, list[float]]:
    """Sequential online probes (alternating a W1 row and a short unrelated chat); their TTFTs."""
    found: dict[str, list[float]] = {"w1_row": [], "short_chat": []}
    for n in range(count):
        if stop is not None and stop.is_set():
            break
        if n % 2 == 0:
            sample, _ = await client.stream_chat(api, MODEL, messages(prefix, rows[n % len(rows)]), 4)
            found["w1_row"].append(sample.ttft)
        else:
            sample, _ = await client.stream_chat(api, MODEL, [{"role": "user", "content": f"Name a colour. ({n})"}], 4)
            found["short_chat"].append(sample.ttft)
        await asyncio.sleep(pause)
    return found


async def run_batch(api: AsyncOpenAI, url: str, prefix: str, rows: list[str], tag: str) -> Report:
    """Submit the rows as one batch and wait for it; wall time, the batch object and token counters."""
    lines = [{"custom_id": f"{tag}-{n}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": MODEL, "messages": messages(prefix, row), "max_tokens": MAX_TOKENS, "temperature": 0}}
             for n, row in enumerate(rows)]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    before = computed_prompt_tokens(url)
    start = time.perf_counter()
    uploaded = await api.files.create(file=(f"{tag}.jsonl", io.BytesIO(data)), purpose="batch")
    batch = await api.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                     completion_window="24h")
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        await asyncio.sleep(0.25)
        batch = await api.batches.retrieve(batch.id)
    seconds = time.perf_counter() - start
    assert batch.status == "completed" and batch.request_counts.failed == 0, batch
    computed = computed_prompt_tokens(url) - before
    return {"seconds": seconds, "rows_per_s": len(rows) / seconds, "computed_prompt_tokens": computed,
            "batch": batch.model_dump()}


TENANTS = ("online", "batch", "probe")  # API keys: no prefix reuse between the batch and the probes


async def probed_batch(url: str, rows: list[str], prefix: str, probes: int) -> Report:
    """Idle probes, then the batch with the same probes running beside it (tenant `probe`)."""
    prober = client.api_client(url, "probe")
    await client.stream_chat(prober, MODEL, messages(prefix, rows[0]), 2)  # warm up (and retain the prefix)
    idle = await probe_ttfts(prober, prefix, rows, probes)
    stop = asyncio.Event()
    probing = asyncio.create_task(probe_ttfts(prober, prefix, rows, 10 ** 6, stop))
    batch = await run_batch(client.api_client(url, "batch"), url, prefix, rows, "w5-probed")
    stop.set()
    return {"idle": idle, "during": await probing, "batch": batch}


async def online_rows(url: str, rows: list[str], prefix: str) -> Report:
    """The rows online, 8 concurrent; rows/s and prompt tokens computed."""
    api = client.api_client(url, "online")

    async def one(row: str) -> client.Sample:
        sample, _ = await client.stream_chat(api, MODEL, messages(prefix, row), MAX_TOKENS)
        return sample

    before = computed_prompt_tokens(url)
    samples, seconds = await client.run_concurrent(rows, 8, one)
    computed = computed_prompt_tokens(url) - before
    return {"seconds": seconds, "rows_per_s": len(rows) / seconds, "computed_prompt_tokens": computed,
            "prompt_tokens": sum(s.prompt_tokens for s in samples),
            "completion_tokens": sum(s.completion_tokens for s in samples)}


def _fresh(args: argparse.Namespace, work: Callable[[str], Coroutine[Any, Any, Report]]) -> Report:
    """`work(url)` on a fresh `minimill serve` (its own data dir), stopped afterwards."""
    data_dir = tempfile.mkdtemp(prefix="minimill-bench-")
    port = peers.free_port()
    keys = [arg for tenant in TENANTS for arg in ("--api-key", tenant)]
    command = peers.minimill_command(port, args.threads, ["--data-dir", data_dir, *keys, *args.serve_args.split()])
    with peers.running(command, port) as url:
        return asyncio.run(work(url))


def w5(args: argparse.Namespace) -> Report:
    """Three fresh servers with the same command, one after the other: online rows; the batch alone;
    idle probes then the batch with probes. Fresh, so that no phase inherits another's KV."""
    prefix, rows = rows_and_prefix(args.rows)

    online = _fresh(args, lambda url: online_rows(url, rows, prefix))
    batch = _fresh(args, lambda url: run_batch(client.api_client(url, "batch"), url, prefix, rows, "w5"))
    probed = _fresh(args, lambda url: probed_batch(url, rows, prefix, args.probes))
    return {"rows": len(rows), "online": online, "batch": batch, "probes_idle": probed["idle"],
            "probes_during_batch": probed["during"], "batch_with_probes": probed["batch"]}


def throughput_pairs(args: argparse.Namespace) -> Report:
    """Online then batch, each on a fresh server, `--repeat` times: per-pair rows/s ratios, whose median
    is less at the mercy of a noisy machine than one pair."""
    prefix, rows = rows_and_prefix(args.rows)
    pairs = []
    for _ in range(args.repeat):
        online = _fresh(args, lambda url: online_rows(url, rows, prefix))
        batch = _fresh(args, lambda url: run_batch(client.api_client(url, "batch"), url, prefix, rows, "w5"))
        pairs.append({"online_rows_per_s": online["rows_per_s"], "batch_rows_per_s": batch["rows_per_s"],
                      "ratio": batch["rows_per_s"] / online["rows_per_s"]})
    ratios = [pair["ratio"] for pair in pairs]
    lines = ["| pair | online rows/s | batch rows/s | batch / online |", "|---|---|---|---|",
             *(f"| {n + 1} | {p['online_rows_per_s']:.3f} | {p['batch_rows_per_s']:.3f} | {p['ratio']:.2f}x |"
               for n, p in enumerate(pairs)),
             f"| median | | | **{statistics.median(ratios):.2f}x** |"]
    return {"rows": len(rows), "pairs": pairs, "table": "\n".join(lines)}


def table(r: Report) -> str:
    """The Markdown table of a W5 report."""
    online, batch = r["online"], r["batch"]
    usage = batch["batch"]["usage"]
    prefix_rows = usage["input_tokens"] - r["online"]["prompt_tokens"]  # the group prefixes' own tokens
    lines = ["| figure | online, 8 concurrent | batch | ratio |", "|---|---|---|---|",
             f"| rows/s ({r['rows']} W1 rows) | {online['rows_per_s']:.3f} | {batch['rows_per_s']:.3f} | "
             f"{batch['rows_per_s'] / online['rows_per_s']:.2f}x |",
             f"| prompt tokens computed | {online['computed_prompt_tokens']:.0f} | "
             f"{batch['computed_prompt_tokens']:.0f} | "
             f"{batch['computed_prompt_tokens'] / online['computed_prompt_tokens']:.2f}x |",
             f"| batch cost (USD, batch discount) | | {batch['batch']['cost']['total']:.3g} | |",
             "", "| online probe | idle TTFT (s) | TTFT during the batch (s) | during / idle |", "|---|---|---|---|"]
    for kind in ("w1_row", "short_chat"):
        idle, during = r["probes_idle"][kind], r["probes_during_batch"][kind]
        if idle and during:
            lines.append(f"| {kind} (n={len(idle)}/{len(during)}) | {statistics.mean(idle):.3f} | "
                         f"{statistics.mean(during):.3f} | {statistics.mean(during) / statistics.mean(idle):.2f}x |")
    lines.append("")
    lines.append(f"Group prefix tokens (prefilled once per group, billed as batch input): {prefix_rows}; "
                 f"cached tokens over all lines: {usage['input_tokens_details']['cached_tokens']}; "
                 f"batch with probes running: {r['batch_with_probes']['rows_per_s']:.3f} rows/s.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "issue5-w5.json")
    parser.add_argument("--serve-args", default="", help="extra `minimill serve` flags, e.g. '--batch-step-tokens 32'")
    parser.add_argument("--repeat", type=int, default=1,
                        help="> 1: only online vs batch throughput, in this many fresh pairs (median ratio)")
    args = parser.parse_args()
    if args.repeat > 1:
        report = throughput_pairs(args)
    else:
        report = w5(args)
        report["table"] = table(report)
    report["serve_args"] = args.serve_args
    report["machine"] = {"platform": platform.platform(), "processor": platform.processor(),
                         "threads": args.threads, "date": time.strftime("%Y-%m-%d")}
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(report["table"])


if __name__ == "__main__":
    main()
