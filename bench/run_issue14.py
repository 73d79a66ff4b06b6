"""Issue 14 benchmark: W1 (cached and uncached), W2 and W3 on a catalogue model (the new default) against
llama.cpp's llama-server with the same model file, one server after the other in the same run.

    python -m bench.peers build && python -m bench.run_issue14 --model qwen2.5-coder-0.5b --rows 16

- W3: 1 and 8 concurrent greedy streams of 128 tokens (`ignore_eos`), aggregate tokens/s.
- W1 uncached: the first row, whose whole prompt (the cleaning prefix + the row) is computed: TTFT.
- W1 cached, plain client: the prefix and the row as one user message, 8 rows in flight; minimill's automatic
  prefix reuse against llama-server's slot prompt cache: rows/s and prompt tokens computed per row.
- W1 cached, `cache_id` (minimill only): the prefix in a prompt cache, billed once.
- W2: one 20-turn conversation, the whole history resent (minimill with `session_id`): prompt tokens computed
  over new tokens, and TTFT of turn 20 over turn 1.
Writes bench/results/issue14-<model>.json and prints a Markdown table of minimill / llama-server ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import client, peers
from bench.run_issue4 import w1_rows, w2_chat


async def measure(url: str, model: str, rows: int, minimill: bool) -> dict[str, Any]:
    """Every workload against one server."""
    api = client.api_client(url)
    out: dict[str, Any] = {"w3_1": await client.w3(api, model, 1), "w3_8": await client.w3(api, model, 8)}
    out["w1_first"] = await client.w1(api, model, 2, 1)  # row 1 cold, row 2 reusing it
    out["w1_8"] = await client.w1(api, model, rows, 8)
    if minimill:
        out["w1_cache_id"] = await w1_rows(url, rows, 8, True, model)
        out["w2"] = await w2_chat(url, True, model)
    else:
        out["w2"] = await w2_chat(url, False, model)
    return out


def table(ours: dict[str, Any], peer: dict[str, Any]) -> str:
    """Markdown: each figure on both servers and minimill's ratio."""
    rows = [("W3 1 stream, tok/s", ours["w3_1"]["tokens_per_s"], peer["w3_1"]["tokens_per_s"]),
            ("W3 8 streams, tok/s", ours["w3_8"]["tokens_per_s"], peer["w3_8"]["tokens_per_s"]),
            ("W1 uncached: TTFT of the first row, s (lower is better)", ours["w1_first"]["mean_ttft"],
             peer["w1_first"]["mean_ttft"]),
            ("W1 cached, 8 concurrent, rows/s", ours["w1_8"]["rows_per_s"], peer["w1_8"]["rows_per_s"]),
            ("W1 cached, prompt tokens computed per row after the first", ours["w1_8"]["prefill_per_row"],
             peer["w1_8"]["prefill_per_row"]),
            ("W2 prompt tokens computed / new tokens", ours["w2"]["computed"] / ours["w2"]["new"],
             peer["w2"]["computed"] / peer["w2"]["new"]),
            ("W2 TTFT turn 20 / turn 1", ours["w2"]["ttft_20_over_1"], peer["w2"]["ttft_20_over_1"])]
    lines = ["| figure | minimill | llama-server | minimill / llama-server |", "|---|---|---|---|"]
    lines += [f"| {label} | {a:.3f} | {b:.3f} | {a / b:.2f}x |" for label, a, b in rows]
    cached = ours["w1_cache_id"]
    lines.append(f"\nminimill W1 with `cache_id`: {cached['rows_per_s']:.3f} rows/s, "
                 f"{cached['billed_full_price_tokens_per_row']:.1f} full-price prompt tokens per row of "
                 f"{cached['prompt_tokens_per_row']:.1f}; input ${cached['billed_input_usd_per_row']:.3g} per row vs "
                 f"${cached['uncached_input_usd_per_row']:.3g} uncached")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    peers.build_llama_server()
    data_dir = tempfile.mkdtemp(prefix="issue14-")
    # No admission limit: llama-server has none, and a throughput benchmark queues by design (on 2 cores a
    # 1.5B prefills ~40 tok/s, so 8 W1 rows in flight expect more than the default 30 s of waiting).
    serve = ["-m", args.model, "--data-dir", data_dir, "--max-queue-delay", "3600"]
    servers = {"minimill": lambda port: peers.minimill_command(port, args.threads, serve),
               "llama-server": lambda port: peers.llama_server_command(port, args.threads, args.model)}
    results: dict[str, dict[str, Any]] = {}
    for name, command in servers.items():
        port = peers.free_port()
        with peers.running(command(port), port) as url:
            results[name] = asyncio.run(measure(url, args.model, args.rows, name == "minimill"))
    out = args.out or Path(f"bench/results/issue14-{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = table(results["minimill"], results["llama-server"])
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} "
                               f"{platform.processor()}", "args": vars(args) | {"out": str(out)},
                               "results": results, "table": text}, indent=2, default=str))
    print(text)


if __name__ == "__main__":
    main()
