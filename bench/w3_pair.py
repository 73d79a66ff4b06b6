"""W3 only, minimill then llama-server in the same run: python -m bench.w3_pair > bench/results/w3_pair.json"""

import asyncio
import json

from openai import AsyncOpenAI

from bench import client, peers

out: dict[str, dict[str, dict[str, float]]] = {}
for name, cmd in [("minimill", peers.minimill_command), ("llama_server", peers.llama_server_command)]:
    port = peers.free_port()
    with peers.running(cmd(port, 2) if name == "llama_server" else cmd(port, 2, []), port) as url:
        api = AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)
        async def go():
            return {"w3_1": await client.w3(api, "smollm2-135m", 1), "w3_8": await client.w3(api, "smollm2-135m", 8)}
        out[name] = asyncio.run(go())
print(json.dumps(out))
