"""Issue 16 benchmark: speculative decoding by prompt lookup, a draft model and Predicted Outputs, minimill
against itself without speculation and against llama.cpp's llama-server with and without its n-gram and
draft-model speculation, same model files and threads, one server after another in one run.

    python -m bench.peers build && python -m bench.spec_peers --model qwen2.5-coder-1.5b --rows 8
    python -m bench.spec_peers --servers "minimill,minimill draft,llama-server draft"   # a subset

- W1 rows (cleaning copies most of the row): the prefix and one row per request, <= 24 greedy tokens, at 1 and 8
  in flight: output tokens/s and rows/s.
- W3 (nothing to copy): one greedy stream of 128 tokens (`ignore_eos`): tokens/s, to show what drafting costs
  where it does not pay.
- Edit (minimill only, Predicted Outputs): rename a variable in a 30-line function, the function as the
  prediction: latency against the same request without one.
Writes bench/results/spec-<model>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path
from typing import Any

from bench import client, peers

EDIT_CODE = "\n".join(
    [f"def report_{n}(rows):" if n == 0 else f"    x{n} = rows[{n}] * {n} + x{n - 1}  # step {n}" for n in range(30)]
    + ["    return x29"])
EDIT_ASK = ("Rename every variable x<number> to total<number> in this code. Reply with the whole code only, "
            "no explanation, no code fences.\n\n" + EDIT_CODE)
EDIT_EXPECTED = EDIT_CODE.replace(" x", " total").replace("+ x", "+ total").replace("(x", "(total")


async def w1_rows(api: Any, model: str, rows: int, concurrency: int) -> dict[str, float]:
    """W1 rows at `concurrency` after one row that warms the prefix: rows/s and output tokens/s."""
    prefix = (client.WORKLOADS / "w1_prefix.txt").read_text()
    lines = [line for line in (client.WORKLOADS / "w1_rows.txt").read_text().splitlines() if line.strip()]
    await client.one_chat(api, model, prefix + lines[0], 24, False)
    samples, seconds = await client.run_concurrent([prefix + line for line in lines[1:rows + 1]], concurrency,
                                                   lambda c: client.one_chat(api, model, c, 24, False))
    tokens = sum(s.completion_tokens for s in samples)
    return {"rows": len(samples), "seconds": seconds, "rows_per_s": len(samples) / seconds,
            "tokens_per_s": tokens / seconds}


async def edit(api: Any, model: str, predicted: bool) -> dict[str, float]:
    """The edit task once to warm its prompt, then timed; with the original code as the prediction or not."""
    extra: dict[str, Any] = {"prediction": {"type": "content", "content": EDIT_CODE}} if predicted else {}
    messages = [{"role": "user", "content": EDIT_ASK}]
    await client.stream_chat(api, model, messages, 8, extra)
    start = time.perf_counter()
    sample, text = await client.stream_chat(api, model, messages, 600, extra)
    return {"latency": time.perf_counter() - start, "completion_tokens": sample.completion_tokens,
            "correct": float(text.strip() == EDIT_EXPECTED.strip())}


async def measure(url: str, model: str, rows: int, minimill: bool) -> dict[str, Any]:
    """Every workload against one server."""
    api = client.api_client(url)
    out: dict[str, Any] = {"w1_1": await w1_rows(api, model, rows, 1), "w1_8": await w1_rows(api, model, rows, 8),
                           "w3_1": await client.w3(api, model, 1)}
    if minimill:
        out["edit_plain"] = await edit(api, model, predicted=False)
        out["edit_predicted"] = await edit(api, model, predicted=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spec-max-draft", type=int, default=8)
    parser.add_argument("--draft-model", default="qwen2.5-coder-0.5b", help="the draft model for both servers")
    parser.add_argument("--servers", default=None, help="comma-separated names of the servers to run [all]")
    args = parser.parse_args()
    peers.build_llama_server()

    def commands(port: int) -> dict[str, tuple[list[str], bool]]:
        spec = ["--speculation", "ngram", "--spec-max-draft", str(args.spec_max_draft)]
        peer = peers.llama_server_command(port, args.threads, args.model)
        draft = ["--draft-model", args.draft_model, "--spec-max-draft", str(args.spec_max_draft)]
        return {"minimill": (peers.minimill_command(port, args.threads, ["-m", args.model]), True),
                "minimill ngram": (peers.minimill_command(port, args.threads, ["-m", args.model, *spec]), True),
                "minimill draft": (peers.minimill_command(port, args.threads, ["-m", args.model, *draft]), True),
                "llama-server": (peer, False),
                "llama-server ngram-simple": ([*peer, "--spec-type", "ngram-simple", "--spec-ngram-simple-size-m",
                                               str(args.spec_max_draft)], False),
                "llama-server draft": ([*peer, "-md", str(peers.model_path(args.draft_model)), "--spec-type",
                                        "draft-simple", "--spec-draft-n-max", str(args.spec_max_draft)], False)}

    chosen = args.servers.split(",") if args.servers else list(commands(0))
    results: dict[str, Any] = {}
    for name in chosen:
        port = peers.free_port()
        command, minimill = commands(port)[name]
        with peers.running(command, port) as url:
            results[name] = asyncio.run(measure(url, args.model, args.rows, minimill))
        print(name, json.dumps(results[name]), flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "model": args.model, "rows": args.rows, "threads": args.threads, "results": results}
    suffix = "" if args.servers is None else "-" + "-".join(sorted(n.replace(" ", "_") for n in chosen))
    out = Path(__file__).parent / "results" / f"spec-{args.model}{suffix}.json"
    out.write_text(json.dumps(report, indent=2))
    print(table(results))


def table(results: dict[str, Any]) -> str:
    """Markdown: each server's figures and the ratios the issue names."""
    lines = ["| server | W1 1 in flight, rows/s | W1 8 in flight, rows/s | W3 1 stream, tok/s |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['w1_1']['rows_per_s']:.3f} | {r['w1_8']['rows_per_s']:.3f} | "
                     f"{r['w3_1']['tokens_per_s']:.2f} |")
    lines.append("")
    off = results.get("minimill")
    for method, peer_name in (("ngram", "llama-server ngram-simple"), ("draft", "llama-server draft")):
        ours, peer = results.get(f"minimill {method}"), results.get(peer_name)
        for label, key in (("W1 1 in flight", "w1_1"), ("W1 8 in flight", "w1_8")):
            if ours is not None and off is not None:
                lines.append(f"- {label}: {method} / off {ours[key]['rows_per_s'] / off[key]['rows_per_s']:.2f}x")
            if ours is not None and peer is not None:
                lines.append(f"- {label}: {method} / {peer_name} "
                             f"{ours[key]['rows_per_s'] / peer[key]['rows_per_s']:.2f}x")
        if ours is not None and off is not None:
            lines.append(f"- W3: {method} / off {ours['w3_1']['tokens_per_s'] / off['w3_1']['tokens_per_s']:.2f}x")
    if off is None:
        return "\n".join(lines)
    plain, predicted = off["edit_plain"], off["edit_predicted"]
    lines.append(f"- Edit, Predicted Outputs: latency {predicted['latency']:.1f} s against {plain['latency']:.1f} s "
                 f"({predicted['latency'] / plain['latency']:.2f}x); exact answer: {predicted['correct']:.0f} with, "
                 f"{plain['correct']:.0f} without")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
