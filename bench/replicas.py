"""Issue 17: 2 replicas on Ray Serve with minimill's router, round robin and Ray Serve LLM's prefix router, and one
replica alone, in one run, on the same model file and threads (1 per replica), one ledger on PostgreSQL.

    python -m bench.replicas --rows 64 --convs 32 --turns 6

- W1, several prefixes: `--prefixes` (4) distinct instruction prefixes (the W1 prefix under a different first
  line each, as four tenants' jobs would differ), rows interleaved (row i with prefix i mod 4, or with
  `--shuffle` the same counts in a seeded random order), 4 in flight, ≤24 greedy tokens each. Reported: prompt
  tokens computed per row (prompt - cached), rows/s, mean TTFT.
- W6 (`../shared/workloads/w6_convs.json`): plain client, no session id, turn t of every conversation before
  turn t+1 of any (with `--shuffle`, each turn's conversations in a seeded random order), 4 in flight, whole
  history resent, 30-token answers. Reported: prompt tokens computed per turn
  and over new tokens, wall, mean TTFT.
Servers (`minimill serve`, fresh data dir each): `--replicas 2 --replica-router affinity|round_robin|ray_prefix`,
and `one replica` (the single-process server, `--threads 1`); `--serve-args` adds flags to all (e.g. a RAM tier
that holds every prefix once across the replicas but not on each). Writes bench/results/NAME.json and prints a
Markdown table.
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
from pathlib import Path
from typing import Any

from bench import client, peers
from bench.w6_peers import conversations
from tests.postgres import postgres_server

RESULTS = Path(__file__).resolve().parent / "results"
ROUTERS = ("affinity", "round_robin", "ray_prefix")


def w1_jobs(rows: int, prefixes: int, shuffle: bool) -> list[str]:
    """Row i after prefix i mod `prefixes` (each prefix differs from its first line on), or, with `shuffle`, the
    same prefix counts in a seeded random order: a strict cycle lets round robin over an even number of replicas
    send every row of a prefix to one replica by parity alone."""
    prefix = (client.WORKLOADS / "w1_prefix.txt").read_text()
    lines = [line for line in (client.WORKLOADS / "w1_rows.txt").read_text().splitlines() if line.strip()][:rows]
    order = [i % prefixes for i in range(len(lines))]
    if shuffle:
        random.Random(17).shuffle(order)
    return [f"Job {k} of the data team.\n{prefix}{line}" for k, line in zip(order, lines, strict=True)]


async def w1(url: str, model: str, jobs: list[str], concurrency: int) -> dict[str, Any]:
    """Run the rows; totals and means."""
    async with client.api_client(url) as api:
        samples, seconds = await client.run_concurrent(jobs, concurrency,
                                                       lambda c: client.one_chat(api, model, c, 24, False))
    computed = [s.prompt_tokens - (s.cached_tokens or 0) for s in samples]
    return {"rows": len(samples), "computed_per_row": round(statistics.fmean(computed), 1),
            "prompt_per_row": round(statistics.fmean(s.prompt_tokens for s in samples), 1),
            "wall_s": round(seconds, 1), "rows_per_s": round(len(samples) / seconds, 3),
            "ttft_mean_s": round(statistics.fmean(s.ttft for s in samples), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--prefixes", type=int, default=4)
    parser.add_argument("--convs", type=int, default=32)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--servers", nargs="+", default=[*ROUTERS, "one"], choices=[*ROUTERS, "one"])
    parser.add_argument("--serve-args", default="", help="extra `minimill serve` flags, space-separated")
    parser.add_argument("--no-w6", action="store_true", help="W1 only")
    parser.add_argument("--shuffle", action="store_true",
                        help="W1 rows' prefixes, and each W6 turn's conversations, in a seeded random order")
    parser.add_argument("--name", default="replicas", help="bench/results/NAME.json")
    args = parser.parse_args()
    spec = json.loads((client.WORKLOADS / "w6_convs.json").read_text())
    convs = spec["conversations"][: args.convs]
    answer_tokens = int(spec.get("max_tokens_per_answer", 30))
    jobs = w1_jobs(args.rows, args.prefixes, args.shuffle)
    results: dict[str, dict[str, Any]] = {}
    with postgres_server() as ledger_url:
        for server in args.servers:
            name = "one replica" if server == "one" else f"2 replicas, {server}"
            extra = ["-m", args.model, "--ledger-url", ledger_url, *args.serve_args.split()]
            extra += [] if server == "one" else ["--replicas", "2", "--replica-router", server]
            with tempfile.TemporaryDirectory() as data:
                port = peers.free_port()
                command = peers.minimill_command(port, 1, [*extra, "--data-dir", data])
                with peers.running(command, port) as url:
                    row = {"w1": asyncio.run(w1(url, args.model, jobs, args.concurrency))}
                    if not args.no_w6:
                        w6 = asyncio.run(conversations(url, args.model, convs, args.turns, args.concurrency,
                                                       answer_tokens, sessions=False,
                                                       shuffle_seed=17 if args.shuffle else None))
                        row["w6"] = {k: w6[k] for k in ("computed", "new", "computed_per_new", "wall_s",
                                                        "ttft_mean_s", "requests")}
                        row["w6"]["computed_per_turn"] = round(w6["computed"] / w6["requests"], 1)
            results[name] = row
            print(f"{name}: {row}", flush=True)
    command_line = (f"python -m bench.replicas --model {args.model} --rows {args.rows} --prefixes {args.prefixes} "
                    f"--convs {args.convs} --turns {args.turns} --concurrency {args.concurrency} "
                    f"--servers {' '.join(args.servers)}"
                    + (f" --serve-args '{args.serve_args}'" if args.serve_args else "")
                    + (" --no-w6" if args.no_w6 else "") + (" --shuffle" if args.shuffle else "")
                    + f" --name {args.name}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "command": command_line, "results": results}, indent=2))
    base = results.get("2 replicas, round_robin")
    one = results.get("one replica")
    print(f"\n{command_line}\n")
    print("| server | W1 computed / row | vs round robin | W1 rows/s | vs round robin | vs one replica | W1 TTFT s | "
          "W6 computed / turn | vs round robin | W6 computed / new | W6 wall s | W6 TTFT s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def ratio(part: str, key: str, of: dict[str, Any] | None, to: dict[str, Any] | None, fewer: bool) -> str:
        """`of`'s figure over `to`'s (`to`'s over `of`'s when fewer is better), or - without both."""
        if of is None or to is None or part not in of or part not in to:
            return "-"
        a, b = (to[part][key], of[part][key]) if fewer else (of[part][key], to[part][key])
        return f"{round(a / b, 2)}x" + (" fewer" if fewer else "")

    for name, r in results.items():
        w1r, w6r = r["w1"], r.get("w6")
        w6_cells = "| - | - | - | - | -"
        if w6r is not None:
            w6_cells = (f"| {w6r['computed_per_turn']} | {ratio('w6', 'computed_per_turn', r, base, True)} | "
                        f"{w6r['computed_per_new']} | {w6r['wall_s']} | {w6r['ttft_mean_s']}")
        print(f"| {name} | {w1r['computed_per_row']} | {ratio('w1', 'computed_per_row', r, base, True)} | "
              f"{w1r['rows_per_s']} | {ratio('w1', 'rows_per_s', r, base, False)} | "
              f"{ratio('w1', 'rows_per_s', r, one, False)} | {w1r['ttft_mean_s']} {w6_cells} |")

if __name__ == "__main__":
    main()
