"""Issue 3 benchmark: W3 and W1 on minimill and its peers, one server after the other in the same run.

    python -m bench.run_issue3 --rows 32 --hf --out bench/results/issue3.json

Peers: llama.cpp's llama-server (same model file, 8 slots, prompt cache) and, with --hf, plain HF
transformers (bench/hf_server.py). Prints a Markdown table of ratios (minimill / peer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import client, peers

Results = dict[str, dict[str, float]]
FIGURES = [("W3 1 stream, tok/s", "w3_1", "tokens_per_s"), ("W3 8 streams, tok/s", "w3_8", "tokens_per_s"),
           ("W1 sequential, rows/s", "w1_seq", "rows_per_s"), ("W1 8 concurrent, rows/s", "w1_8", "rows_per_s"),
           ("W1 8 concurrent, prefill tokens per row after the first", "w1_8", "prefill_per_row")]


async def measure(base_url: str, rows: int) -> Results:
    """Every workload against one server."""
    api = client.api_client(base_url)
    return {"w3_1": await client.w3(api, "smollm2-135m", 1), "w3_8": await client.w3(api, "smollm2-135m", 8),
            "w1_seq": await client.w1(api, "smollm2-135m", rows, 1),
            "w1_8": await client.w1(api, "smollm2-135m", rows, 8)}


def table(results: dict[str, Results]) -> str:
    """Markdown: each figure for every server, and minimill's ratio to each peer."""
    names = list(results)
    ours = results["minimill"]
    others = [n for n in names if n != "minimill"]
    head = "| figure | " + " | ".join(names) + " | " + " | ".join(f"minimill / {n}" for n in others) + " |"
    lines = [head, "|" + "---|" * (1 + len(names) + len(others))]
    for label, key, field in FIGURES:
        values = [results[n][key][field] for n in names]
        ratios = [f"{ours[key][field] / results[n][key][field]:.2f}x" for n in others]
        lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + " | " + " | ".join(ratios) + " |")
    shared = ours["w1_8"]["min_cached_tokens"]
    row_tokens = ours["w1_8"]["mean_prompt_tokens"] - shared
    scaling = ours["w3_8"]["tokens_per_s"] / ours["w3_1"]["tokens_per_s"]
    lines.append(f"\nminimill W3 8 streams / 1 stream: {scaling:.2f}x; "
                 f"W1 prefill per row / row's new tokens ({row_tokens:.1f}): "
                 f"{ours['w1_8']['prefill_per_row'] / row_tokens:.2f}x (shared prefix {shared:.0f} tokens)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-peer", action="store_true", help="measure minimill alone")
    parser.add_argument("--hf", action="store_true", help="also measure plain HF transformers")
    parser.add_argument("--serve-args", default="", help="extra `minimill serve` flags, e.g. '--kv-type f16'")
    parser.add_argument("--out", type=Path, default=Path("bench/results/issue3.json"))
    args = parser.parse_args()
    servers: dict[str, Callable[[int], list[str]]] = {
        "minimill": lambda port: peers.minimill_command(port, args.threads, args.serve_args.split())}
    if not args.no_peer:
        peers.build_llama_server()
        servers["llama-server"] = lambda port: peers.llama_server_command(port, args.threads)
    if args.hf:
        servers["hf-transformers"] = lambda port: [sys.executable, "-m", "bench.hf_server", "--port", str(port),
                                                   "--threads", str(args.threads)]
    results: dict[str, Results] = {}
    for name, command in servers.items():
        port = peers.free_port()
        with peers.running(command(port), port) as url:
            results[name] = asyncio.run(measure(url, args.rows))
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.processor()}",
              "threads": args.threads, "rows": args.rows, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(table(results) if len(results) > 1 else json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
