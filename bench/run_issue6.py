"""Issue 6 benchmark: the scoreboard of the served models, and `model: "auto"` on a held-out item set
against always-small and always-large.

    python -m bench.run_issue6 --items 40
    python -m bench.run_issue6 --items 40 --extra-model /path/to/bigger.gguf   # a third, larger model
    python -m bench.run_issue6 --models qwen2.5-coder-0.5b qwen2.5-coder-1.5b --name issue14   # the ladder

One `minimill serve` with both bundled models (and --extra-model), a fresh data dir:
1. tune: every suite's TUNE_SEED items on every model -> the scoreboard the router is tuned on (the
   routing table: per task, the cheapest good-enough model and its cascade) and the default;
2. held out: every suite's HELDOUT_SEED items (different questions) on every model and on "auto"
   (no metadata: the router detects each item's task from its words);
3. quality = mean accuracy over suites, cost = USD from the responses' usage.cost (auto: every attempt).
Writes bench/results/issue6.json, bench/results/issue6-scoreboard.{md,png} and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from statistics import fmean
from typing import Any

import httpx

from bench import peers
from minimill.config import RoutingConfig
from minimill.evals import report, runner
from minimill.evals.results import PUBLISHED, ItemResult, ResultStore
from minimill.evals.scoreboard import Scoreboard
from minimill.evals.suite import HELDOUT_SEED, TUNE_SEED
from minimill.evals.suites import ALL
from minimill.router.features import detect_task
from minimill.router.policy import Router

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ["smollm2-135m", "gemma3-270m"]


def split(results: list[ItemResult], model: str) -> dict[str, Any]:
    """Quality (mean over suites) and total cost of one model's held-out results."""
    versions = {s.name: s.version for s in ALL}
    mine = [r for r in results if r.model == model and versions.get(r.suite) == r.version]
    per_suite = {s.name: fmean(r.score for r in mine if r.suite == s.name) for s in ALL
                 if any(r.suite == s.name for r in mine)}
    return {"quality": fmean(per_suite.values()), "cost_usd": sum(r.cost_usd for r in mine), "items": len(mine),
            "suites": per_suite, "answered_by": dict(Counter(r.answered_by for r in mine))}


def detection(items: int) -> dict[str, Any]:
    """How often the router's task detector names the right suite for a held-out item (no metadata)."""
    hits, total = Counter(), Counter()
    for suite in ALL:
        for item in suite.generate(HELDOUT_SEED, items):
            text = "\n".join(m["content"] for m in item.messages)
            task = detect_task(text, metadata=None, response_format=item.response_format, suites=ALL,
                               tools=bool(item.tools))
            total[suite.name] += 1
            hits[suite.name] += task == suite.name
    return {"accuracy": sum(hits.values()) / sum(total.values()),
            "per_suite": {name: hits[name] / total[name] for name in total}}


async def measure(url: str, store: ResultStore, models: list[str], items: int, heldout_items: int,
                  concurrency: int, timeout: float) -> dict[str, Any]:
    endpoint = runner.Endpoint(url, timeout=timeout)
    started = time.monotonic()
    tune = await runner.run(endpoint, models, ALL, store, seed=TUNE_SEED, n=items, concurrency=concurrency)
    tuned = time.monotonic()
    held = await runner.run(endpoint, [*models, "auto"], ALL, store, seed=HELDOUT_SEED, n=heldout_items,
                            concurrency=concurrency)
    return {"tune_failed": tune.failed, "heldout_failed": held.failed, "tune_seconds": tuned - started,
            "heldout_seconds": time.monotonic() - tuned, "failures": (tune.failures + held.failures)[:10]}


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (the output path and data dir left out)."""
    words = ["python -m bench.run_issue6"]
    for key, value in vars(args).items():
        if value in (None, "", False) or key in ("out", "data_dir"):
            continue
        words.append(f"--{key.replace('_', '-')}")
        if value is not True:
            words.extend(map(str, value) if isinstance(value, list) else [str(value)])
    return " ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=40, help="items per suite and split")
    parser.add_argument("--heldout-items", type=int, default=None, help="items per suite, held-out split [--items]")
    parser.add_argument("--models", nargs="+", default=MODELS, help="served models, cheapest first")
    parser.add_argument("--name", default="issue6", help="prefix of the files written under bench/results")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--extra-model", type=Path, default=None, help="a larger local GGUF to score too")
    parser.add_argument("--serve-args", default="", help="more `minimill serve` flags, e.g. '--min-confidence -0.5'")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="reuse a previous run's results (resumable: only missing items run)")
    parser.add_argument("--from-published", action="store_true",
                        help="start the tune split from the scoreboard shipped with the package (same model files, "
                             "suites and seed: only items it lacks run)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per request (auto may answer twice)")
    parser.add_argument("--out", type=Path, default=None, help="the JSON written [bench/results/NAME.json]")
    args = parser.parse_args()
    args.out = args.out or RESULTS / f"{args.name}.json"

    models = [*args.models, *([str(args.extra_model)] if args.extra_model else [])]
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix=f"{args.name}-"))
    flags = [arg for m in models for arg in ("--model", m)] + ["--data-dir", str(data_dir), *args.serve_args.split()]
    port = peers.free_port()
    command = [*peers.minimill_command(port, args.threads, flags)]
    command[command.index("--kv-size") + 1] = "8192"
    store = ResultStore(data_dir / "evals" / "results")
    if args.from_published:
        shutil.copytree(PUBLISHED, store.root, dirs_exist_ok=True)
    with peers.running(command, port) as url:
        served = [m["id"] for m in httpx.get(f"{url}/models").json()["data"] if m["id"] not in ("default", "auto")]
        timing = asyncio.run(measure(url, store, served, args.items, args.heldout_items or args.items,
                                     args.concurrency, args.timeout))
        board_json = httpx.get(f"{url}/evals").json()
        cards = {m["id"]: m for m in httpx.get(f"{url}/models").json()["data"]}
    # the routing table the server used (default routing settings), rebuilt from the same tuning results
    router = Router(store, RoutingConfig(), served,
                    lambda m: cards[m]["prices"]["input"] + cards[m]["prices"]["output"])
    routes = {suite.name: {"cascade": list(route.cascade), "min_confidence": route.min_confidence}
              for suite in ALL for route in [router.route(suite.name)]}
    small, large = served[0], served[-1]
    tune_board = Scoreboard.build(store.all(seed=TUNE_SEED))
    held = store.all(seed=HELDOUT_SEED)
    outcome = {name: split(held, name) for name in [*served, "auto"]}
    auto, big = outcome["auto"], outcome[large]
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "command": command_line(args),
        "items_per_suite": args.items, "heldout_items_per_suite": args.heldout_items or args.items,
        "models": served, "timing": timing,
        "default": board_json["default"],
        "tune": {m: {"quality": s.quality, "cost_per_item": s.cost_per_item, "latency_s": s.latency_s}
                 for m, s in tune_board.models.items()},
        "routes": routes,
        "heldout": outcome,
        "auto_vs_large": {"quality": auto["quality"] / big["quality"] if big["quality"] else None,
                          "cost": auto["cost_usd"] / big["cost_usd"] if big["cost_usd"] else None},
        "small_vs_large": {"quality": outcome[small]["quality"] / big["quality"] if big["quality"] else None,
                           "cost": outcome[small]["cost_usd"] / big["cost_usd"] if big["cost_usd"] else None},
        "task_detection": detection(args.heldout_items or args.items),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    (RESULTS / f"{args.name}-scoreboard.md").write_text(report.markdown(tune_board, result["default"]["model"]))
    report.plot(tune_board, RESULTS / f"{args.name}-scoreboard.png", result["default"]["model"])
    print(report.markdown(tune_board, result["default"]["model"]))
    print(f"default: {result['default']['model']} ({result['default']['reason']})\n")
    print("| held out | quality | cost (USD) | quality vs large | cost vs large | answered by |")
    print("|---|---|---|---|---|---|")
    for name, row in outcome.items():
        print(f"| {name} | {row['quality']:.3f} | {row['cost_usd']:.6f} | {row['quality'] / big['quality']:.3f} | "
              f"{row['cost_usd'] / big['cost_usd']:.3f} | {row['answered_by']} |")
    print(f"\ntask detection on held-out items: {result['task_detection']['accuracy']:.3f}")
    print(json.dumps(timing))


if __name__ == "__main__":
    main()
