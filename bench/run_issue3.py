"""Issue 3 benchmark: W3 and W1 on minimill and llama-server, one after the other in the same run.

    python -m bench.run_issue3 --out bench/results/issue3.json

Prints a Markdown table of ratios (minimill / llama-server) for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path

from bench import client, peers


async def measure(base_url: str, rows: int) -> dict[str, dict[str, float]]:
    """Every workload against one server."""
    api = client.api_client(base_url)
    return {"w3_1": await client.w3(api, "smollm2-135m", 1), "w3_8": await client.w3(api, "smollm2-135m", 8),
            "w1_seq": await client.w1(api, "smollm2-135m", rows, 1),
            "w1_8": await client.w1(api, "smollm2-135m", rows, 8)}


def table(mm: dict[str, dict[str, float]], ls: dict[str, dict[str, float]] | None) -> str:
    """Markdown rows: each figure for minimill, the peer, and their ratio."""
    shared = mm["w1_8"]["min_cached_tokens"]
    row_tokens = mm["w1_8"]["mean_prompt_tokens"] - shared
    lines = ["| figure | minimill | llama-server | ratio |", "|---|---|---|---|"]

    def add(name: str, ours: float, theirs: float | None, fmt: str = "{:.2f}") -> None:
        peer = fmt.format(theirs) if theirs is not None else "-"
        ratio = f"{ours / theirs:.2f}x" if theirs else "-"
        lines.append(f"| {name} | {fmt.format(ours)} | {peer} | {ratio} |")

    get = (lambda key, field: ls[key][field]) if ls else (lambda key, field: None)  # noqa: E731
    add("W3 1 stream, tok/s", mm["w3_1"]["tokens_per_s"], get("w3_1", "tokens_per_s"))
    add("W3 8 streams, tok/s", mm["w3_8"]["tokens_per_s"], get("w3_8", "tokens_per_s"))
    add("W1 sequential, rows/s", mm["w1_seq"]["rows_per_s"], get("w1_seq", "rows_per_s"))
    add("W1 8 concurrent, rows/s", mm["w1_8"]["rows_per_s"], get("w1_8", "rows_per_s"))
    add("W1 8 concurrent, prefill tokens computed per row (after the first)",
        mm["w1_8"]["prefill_per_row"], get("w1_8", "prefill_per_row"), "{:.1f}")
    lines.append(f"\nminimill W3 8 streams / 1 stream: {mm['w3_8']['tokens_per_s'] / mm['w3_1']['tokens_per_s']:.2f}x; "
                 f"W1 prefill per row / row's new tokens ({row_tokens:.1f}): "
                 f"{mm['w1_8']['prefill_per_row'] / row_tokens:.2f}x (shared prefix {shared:.0f} tokens)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-peer", action="store_true", help="measure minimill alone")
    parser.add_argument("--out", type=Path, default=Path("bench/results/issue3.json"))
    args = parser.parse_args()
    port = peers.free_port()
    with peers.running(peers.minimill_command(port, args.threads, []), port) as url:
        ours = asyncio.run(measure(url, args.rows))
    theirs = None
    if not args.no_peer:
        peers.build_llama_server()
        port = peers.free_port()
        with peers.running(peers.llama_server_command(port, args.threads), port) as url:
            theirs = asyncio.run(measure(url, args.rows))
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.processor()}",
              "threads": args.threads, "rows": args.rows, "minimill": ours, "llama_server": theirs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(table(ours, theirs))


if __name__ == "__main__":
    main()
