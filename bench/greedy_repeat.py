"""How reproducible greedy answers are on one server: the same eval items twice in a row (the second pass
finds every prompt cached), one request at a time, and the answers compared.

    python -m bench.greedy_repeat --items 40

A fresh `minimill serve` (SmolLM2, 2 threads); reading, classification and extraction items of the held-out
split. Prints how many answers differ between the passes, per suite.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections import Counter
from pathlib import Path

from bench import peers
from minimill.evals import runner
from minimill.evals.results import ResultStore
from minimill.evals.suite import HELDOUT_SEED
from minimill.evals.suites import by_name

SUITES = ("reading", "classification", "extraction")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--serve-args", default="", help="more `minimill serve` flags, e.g. '--kv-type f16'")
    args = parser.parse_args()
    suites = [by_name(name) for name in SUITES]
    port = peers.free_port()
    flags = ["--model", "smollm2-135m", "--data-dir", tempfile.mkdtemp(prefix="greedy-"), *args.serve_args.split()]
    passes = []
    with peers.running(peers.minimill_command(port, args.threads, flags), port) as url:
        for _ in range(2):
            store = ResultStore(Path(tempfile.mkdtemp(prefix="greedy-pass-")))
            asyncio.run(runner.run(runner.Endpoint(url), ["smollm2-135m"], suites, store, seed=HELDOUT_SEED,
                                   n=args.items, concurrency=1))
            passes.append({(r.suite, r.item_id): r.answer for r in store.all()})
    first, second = passes
    differ = Counter(suite for (suite, item), answer in first.items() if second[(suite, item)] != answer)
    print(f"answers that differ between the passes: {sum(differ.values())} of {len(first)}; by suite: "
          f"{dict(differ)}")


if __name__ == "__main__":
    main()
