"""Engine process overhead: minimill before and after the engine moved into a child process, vs llama-server.

    git -C /work/main worktree add --detach /tmp/base 9a75fc4   # the code before the change, once
    python -m bench.peers build                                 # llama-server from the pinned sources, once
    python -m bench.process_overhead --base /tmp/base --rounds 3 --rows 32

Three servers, same model file (smollm2-135m), same threads, sized like the other benches
(`minimill serve --threads 2 --kv-size 16384 --max-seqs 32`; llama-server `-np 8 -c 16384`):
- `base`: `minimill serve` from the worktree at --base (cwd and PYTHONPATH = that tree: the old package,
  engine in the server process);
- `new`: `minimill serve` from this tree (engine in a supervised child process);
- `llama-server`: the peer (bench/peers.py).
Each round starts every server afresh (fresh --data-dir for minimill), in an order that rotates each round
(base, new, peer; then new, peer, base; ...) so that no server always runs first on a cooling machine, and runs
W3 (1 and 8 streams, 128 tokens) and W1 (--rows rows sequential, then 8 concurrent) with bench/client.py, so
machine noise is spread over all three. Reported per figure: the median over rounds, each minimill's ratio
to llama-server, new / base, and new / base within each round. JSON: bench/results/process_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import client, peers

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
Results = dict[str, dict[str, float]]
FIGURES = [("W3 1 stream, tok/s", "w3_1", "tokens_per_s"), ("W3 8 streams, tok/s", "w3_8", "tokens_per_s"),
           ("W1 sequential, rows/s", "w1_seq", "rows_per_s"), ("W1 8 concurrent, rows/s", "w1_8", "rows_per_s")]
SERVERS = ["base", "new", "llama-server"]


async def measure(base_url: str, rows: int) -> Results:
    """W3 then W1 against one freshly started server."""
    async with client.api_client(base_url) as api:  # closed inside the loop that opened it
        return {"w3_1": await client.w3(api, MODEL, 1), "w3_8": await client.w3(api, MODEL, 8),
                "w1_seq": await client.w1(api, MODEL, rows, 1), "w1_8": await client.w1(api, MODEL, rows, 8)}


def tree_env(tree: Path) -> dict[str, str]:
    """The environment that makes `python -m minimill.cli` import the package from `tree`."""
    return {**os.environ, "PYTHONPATH": str(tree)}


def imported_from(tree: Path) -> str:
    """Where `minimill` is imported from when run in `tree` with its PYTHONPATH (checked before measuring)."""
    out = subprocess.run([sys.executable, "-c", "import minimill; print(minimill.__file__)"], cwd=tree,
                         env=tree_env(tree), capture_output=True, text=True, check=True)
    return out.stdout.strip()


def tree_id(tree: Path) -> dict[str, str]:
    """The tree's commit (read-only git) and a hash of the package's sources as measured (uncommitted included)."""
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    sources = hashlib.sha256()
    for path in sorted((tree / "minimill").rglob("*.py")):
        sources.update(str(path.relative_to(tree)).encode() + b"\0" + path.read_bytes())
    return {"head": head.strip(), "minimill_sources_sha256": sources.hexdigest()[:16]}


def admit_all(tree: Path) -> list[str]:
    """Where the tree refuses requests by expected wait (`--max-queue-delay`), a limit no run here reaches:
    the base has no such refusal, and a 429 would end W1 on a loaded machine (this measures the engine)."""
    return ["--max-queue-delay", "3600"] if "max_queue_delay" in (tree / "minimill" / "cli.py").read_text() else []


def run_one(name: str, base: Path, threads: int, rows: int) -> Results:
    """Start one server, measure it, stop it."""
    port = peers.free_port()
    if name == "llama-server":
        with peers.running(peers.llama_server_command(port, threads), port) as url:
            return asyncio.run(measure(url, rows))
    tree = base if name == "base" else REPO
    with tempfile.TemporaryDirectory(prefix=f"minimill-{name}-") as data:
        command = peers.minimill_command(port, threads, ["--data-dir", data, "--model", MODEL, *admit_all(tree)])
        with peers.running(command, port, cwd=tree, env=tree_env(tree)) as url:
            return asyncio.run(measure(url, rows))


def summarise(rounds: list[dict[str, Results]]) -> dict[str, dict[str, float | list[float]]]:
    """Per figure: each server's median over rounds, the ratios, and new / base within each round."""
    out: dict[str, dict[str, float | list[float]]] = {}
    for label, key, field in FIGURES:
        med = {s: statistics.median(r[s][key][field] for r in rounds) for s in SERVERS}
        out[label] = {**med, "base / llama-server": med["base"] / med["llama-server"],
                      "new / llama-server": med["new"] / med["llama-server"], "new / base": med["new"] / med["base"],
                      "new / base per round": [r["new"][key][field] / r["base"][key][field] for r in rounds],
                      "max / min over rounds": [max(r[s][key][field] for r in rounds)
                                                / min(r[s][key][field] for r in rounds) for s in SERVERS]}
    return out


def table(summary: dict[str, dict[str, float | list[float]]]) -> str:
    """Markdown: medians, ratios to llama-server, new / base (and per round)."""
    lines = ["| figure (median of rounds) | base | new | llama-server | base / llama-server | new / llama-server "
             "| new / base | new / base per round |", "|---|---|---|---|---|---|---|---|"]
    for label, row in summary.items():
        per_round = ", ".join(f"{x:.3f}" for x in row["new / base per round"])  # type: ignore[union-attr]
        lines.append(f"| {label} | {row['base']:.2f} | {row['new']:.2f} | {row['llama-server']:.2f} "
                     f"| {row['base / llama-server']:.3f}x | {row['new / llama-server']:.3f}x "
                     f"| {row['new / base']:.3f}x | {per_round} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=Path("/tmp/base"), help="worktree of the code before the change")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "process_overhead.json")
    args = parser.parse_args()
    base = args.base.resolve()
    if not (base / "minimill" / "cli.py").exists():
        sys.exit(f"no minimill tree at {base}: git -C {REPO} worktree add --detach {base} 9a75fc4")
    for tree in (base, REPO):
        origin = imported_from(tree)
        if not origin.startswith(str(tree)):
            sys.exit(f"minimill run in {tree} imports {origin}, not that tree")
    if not peers.LLAMA_SERVER.exists():
        sys.exit("llama-server is not built: python -m bench.peers build")
    started = time.monotonic()
    rounds: list[dict[str, Results]] = []
    log: list[dict[str, object]] = []
    for i in range(args.rounds):
        results: dict[str, Results] = {}
        for name in SERVERS[i % len(SERVERS):] + SERVERS[:i % len(SERVERS)]:
            t0, load0 = time.monotonic(), os.getloadavg()[0]
            results[name] = run_one(name, base, args.threads, args.rows)
            log.append({"round": i + 1, "server": name, "seconds": round(time.monotonic() - t0, 1),
                        "loadavg_1m_before": load0, "loadavg_1m_after": os.getloadavg()[0]})
            print(f"round {i + 1} {name}: " + ", ".join(f"{k} {results[name][k][f]:.2f}" for _, k, f in FIGURES)
                  + f" ({log[-1]['seconds']} s)", file=sys.stderr, flush=True)
            write_report(args, base, started, log, [*rounds, results], {})
        rounds.append(results)
    summary = summarise(rounds)
    write_report(args, base, started, log, rounds, summary)
    print(table(summary))
    prefill = {s: [r[s]["w1_8"]["prefill_per_row"] for r in rounds] for s in SERVERS}
    print("\nW1 8 concurrent, prefill tokens per row after the first (per round): "
          + "; ".join(f"{s} " + ", ".join(f"{x:.1f}" for x in v) for s, v in prefill.items()))
    print(f"total {time.monotonic() - started:.0f} s")


def write_report(args: argparse.Namespace, base: Path, started: float, log: list[dict[str, object]],
                 rounds: list[dict[str, Results]], summary: dict[str, dict[str, float | list[float]]]) -> None:
    """The JSON report (also written after every server, so that a failed run keeps what it measured)."""
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {os.cpu_count()} cpus",
              "command": " ".join(["python -m bench.process_overhead", *sys.argv[1:]]), "threads": args.threads,
              "rows": args.rows, "model": MODEL, "base": {"path": str(base), **tree_id(base)},
              "new": {"path": str(REPO), **tree_id(REPO)},
              "serve_flags": {"base": admit_all(base), "new": admit_all(REPO)},
              "seconds": round(time.monotonic() - started, 1), "log": log, "summary": summary, "rounds": rounds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
