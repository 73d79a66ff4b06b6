"""Eval suites as a workload: the same items through minimill and through llama.cpp's own llama-server
(same SmolLM2 file, same threads), greedy, 8 in flight. Extraction asks for a json_schema
response_format on every item, so it measures grammar-constrained decoding; facts is the plain
counterpart.

    python -m bench.evals_vs_peer --items 40

Prints items/s and accuracy per server and suite, and minimill / llama-server ratios; writes
bench/results/evals-vs-peer.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from statistics import fmean
from typing import Any

from bench import peers
from minimill.evals import runner
from minimill.evals.results import ResultStore
from minimill.evals.suite import HELDOUT_SEED
from minimill.evals.suites import by_name

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "smollm2-135m"


def measure(url: str, suite_name: str, items: int, concurrency: int) -> dict[str, Any]:
    """Items/s and accuracy of one suite against one server (a fresh result store: nothing skipped)."""
    store = ResultStore(Path(tempfile.mkdtemp(prefix="evals-peer-")))
    suite = by_name(suite_name)
    started = time.monotonic()
    summary = asyncio.run(runner.run(runner.Endpoint(url), [MODEL], [suite], store, seed=HELDOUT_SEED, n=items,
                                     concurrency=concurrency))
    seconds = time.monotonic() - started
    results = store.all()
    return {"items_per_s": len(results) / seconds, "accuracy": fmean(r.score for r in results) if results else 0.0,
            "latency_s": fmean(r.latency_s for r in results) if results else None, "failed": summary.failed,
            "completion_tokens": sum(r.completion_tokens for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--suites", nargs="+", default=["extraction", "facts"])
    args = parser.parse_args()

    servers = {"minimill": lambda port: peers.minimill_command(port, args.threads, ["--model", MODEL]),
               "llama-server": lambda port: peers.llama_server_command(port, args.threads)}
    table: dict[str, dict[str, Any]] = {}
    for name, command in servers.items():
        port = peers.free_port()
        with peers.running(command(port), port) as url:
            table[name] = {suite: measure(url, suite, args.items, args.concurrency) for suite in args.suites}
    mine, peer = table["minimill"], table["llama-server"]
    ratios = {suite: {"items_per_s": mine[suite]["items_per_s"] / peer[suite]["items_per_s"]} for suite in args.suites}
    out = {"date": time.strftime("%Y-%m-%d"), "command": f"python -m bench.evals_vs_peer --items {args.items}",
           "servers": table, "minimill_over_llama_server": ratios}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "evals-vs-peer.json").write_text(json.dumps(out, indent=2))
    print("| server | suite | items/s | accuracy | mean latency (s) | completion tokens |")
    print("|---|---|---|---|---|---|")
    for name, suites in table.items():
        for suite, row in suites.items():
            print(f"| {name} | {suite} | {row['items_per_s']:.2f} | {row['accuracy']:.3f} | {row['latency_s']:.2f} | "
                  f"{row['completion_tokens']} |")
    for suite, ratio in ratios.items():
        print(f"minimill / llama-server items/s on {suite}: {ratio['items_per_s']:.2f}x")


if __name__ == "__main__":
    main()
