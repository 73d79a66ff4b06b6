"""W3 only, minimill then llama-server in the same run.

    python -m bench.w3_pair > bench/results/w3_pair.json
"""

from __future__ import annotations

import asyncio
import json

from bench import client, peers


async def both_w3(url: str) -> dict[str, dict[str, float]]:
    """W3 with 1 stream, then 8 streams, against one server."""
    api = client.api_client(url)
    return {"w3_1": await client.w3(api, "smollm2-135m", 1), "w3_8": await client.w3(api, "smollm2-135m", 8)}


def main() -> None:
    peers.build_llama_server()
    out: dict[str, dict[str, dict[str, float]]] = {}
    commands = {"minimill": lambda port: peers.minimill_command(port, 2, []),
                "llama_server": lambda port: peers.llama_server_command(port, 2)}
    for name, command in commands.items():
        port = peers.free_port()
        with peers.running(command(port), port) as url:
            out[name] = asyncio.run(both_w3(url))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
