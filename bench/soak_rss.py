"""The soak's memory over time: one server (sized as `tests/reliability/test_soak.py` starts it), the soak's
mix in rounds, the engine process's and the server's RSS after each. Tells a leak (growth every round) from
warm-up (growth that stops).

    python -m bench.soak_rss --rounds 9 --seconds 45
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from bench import peers
from tests.reliability import test_soak as soak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=45.0)
    args = parser.parse_args()
    port = peers.free_port()
    command = [sys.executable, "-m", "minimill.cli", "serve", "--port", str(port), "--data-dir", tempfile.mkdtemp(),
               "--log-level", "warning", "-m", soak.MODEL, "--kv-size", "4096", "--max-seqs", "16", "--threads", "2",
               "--api-key", soak.KEY, "--ram-tier-bytes", str(16 << 20)]
    with peers.running(command, port, health="/health") as url:
        root = url.removesuffix("/v1")
        print("| round | requests | engine RSS MiB | server RSS MiB |")
        print("|---|---|---|---|")
        for round_ in range(1, args.rounds + 1):
            counts = asyncio.run(soak.soak(root, args.seconds))
            pid = server_pid(port)
            engine = soak.usage_of(soak.engine_pid(pid))["rss_kib"] / 1024
            served = soak.usage_of(pid)["rss_kib"] / 1024
            print(f"| {round_} | {sum(counts.values())} | {engine:.0f} | {served:.0f} |", flush=True)


def server_pid(port: int) -> int:
    """The `minimill serve` process listening on `port` (found by its command line)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"minimill.cli" in cmdline and str(port).encode() in cmdline:
                return int(proc.name)
    raise RuntimeError(f"no minimill serve on port {port}")


if __name__ == "__main__":
    main()
