"""Workload client speaking the OpenAI API (official `openai` client): W1 and W3 of DESIGN.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

from openai import AsyncOpenAI

WORKLOADS = Path(__file__).resolve().parents[2] / "shared" / "workloads"
W3_PROMPT = "Write a long, detailed story about a lighthouse keeper and the sea."


def api_client(base_url: str, api_key: str = "none") -> AsyncOpenAI:
    """The client every workload uses. llama-server closes kept-alive connections after a few
    requests; a request that got no response at all is safe to send again, hence the retries."""
    return AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=2, timeout=900)


@dataclass
class Sample:
    """One request's measurements."""

    ttft: float
    latency: float
    completion_tokens: int
    prompt_tokens: int
    cached_tokens: int | None
    prompt_computed: int | None  # llama-server's timings.prompt_n, when the peer reports it
    tier: str | None = None  # minimill: where a named cache's or session's KV came from
    cost: dict[str, float] | None = None  # minimill: usage.cost

    @property
    def computed(self) -> int:
        """Prompt tokens the server computed: its own count if it reports one, else prompt - cached."""
        if self.prompt_computed is not None:
            return self.prompt_computed
        return self.prompt_tokens - (self.cached_tokens or 0)


async def stream_chat(client: AsyncOpenAI, model: str, messages: list[dict[str, str]], max_tokens: int,
                      extra: dict[str, object] | None = None) -> tuple[Sample, str]:
    """Stream one greedy chat request; its timings and its text."""
    start = time.perf_counter()
    ttft = None
    usage = None
    timings = None
    text = ""
    stream = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0,  # type: ignore[arg-type]
        stream=True, stream_options={"include_usage": True}, extra_body=extra or {})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if ttft is None:
                ttft = time.perf_counter() - start
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage = chunk.usage
        timings = (chunk.model_extra or {}).get("timings", timings)
    latency = time.perf_counter() - start
    assert usage is not None, "server sent no usage"
    details = usage.prompt_tokens_details
    extras = details.model_extra or {} if details is not None else {}
    return Sample(ttft=ttft or latency, latency=latency, completion_tokens=usage.completion_tokens,
                  prompt_tokens=usage.prompt_tokens,
                  cached_tokens=details.cached_tokens if details is not None else None,
                  prompt_computed=int(timings["prompt_n"]) if timings else None,
                  tier=extras.get("cache_tier"), cost=(usage.model_extra or {}).get("cost")), text


async def one_chat(client: AsyncOpenAI, model: str, content: str, max_tokens: int, ignore_eos: bool) -> Sample:
    """Stream one greedy single-message chat request and time it."""
    extra: dict[str, object] = {"ignore_eos": True} if ignore_eos else {}
    sample, _ = await stream_chat(client, model, [{"role": "user", "content": content}], max_tokens, extra)
    return sample


async def run_concurrent(jobs: list[str], concurrency: int, call) -> tuple[list[Sample], float]:  # type: ignore[no-untyped-def]
    """Run `call(content)` over jobs with `concurrency` workers; returns samples (in job order) and seconds."""
    results: list[Sample | None] = [None] * len(jobs)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(jobs)):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            results[i] = await call(jobs[i])

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [r for r in results if r is not None], time.perf_counter() - start


async def w3(client: AsyncOpenAI, model: str, streams: int, max_tokens: int = 128) -> dict[str, float]:
    """W3: `streams` concurrent greedy streams of `max_tokens` tokens; aggregate tokens/s."""
    samples, seconds = await run_concurrent([W3_PROMPT] * streams, streams,
                                            lambda c: one_chat(client, model, c, max_tokens, True))
    tokens = sum(s.completion_tokens for s in samples)
    return {"streams": streams, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


async def w1(client: AsyncOpenAI, model: str, rows: int, concurrency: int) -> dict[str, float]:
    """W1: the stable cleaning prefix + one row each, ≤24 greedy tokens; rows/s and prefill per row."""
    prefix = (WORKLOADS / "w1_prefix.txt").read_text()
    lines = [line for line in (WORKLOADS / "w1_rows.txt").read_text().splitlines() if line.strip()][:rows]
    samples, seconds = await run_concurrent([prefix + line for line in lines], concurrency,
                                            lambda c: one_chat(client, model, c, 24, False))
    later = samples[1:]
    computed = [s.prompt_computed if s.prompt_computed is not None else s.prompt_tokens - (s.cached_tokens or 0)
                for s in later]
    cached = [s.cached_tokens for s in later if s.cached_tokens is not None]
    return {"rows": len(samples), "concurrency": concurrency, "seconds": seconds, "rows_per_s": len(samples) / seconds,
            "prefill_per_row": sum(computed) / len(later), "mean_ttft": sum(s.ttft for s in samples) / len(samples),
            "mean_prompt_tokens": sum(s.prompt_tokens for s in later) / len(later),
            "min_cached_tokens": min(cached) if cached else 0}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--api-key", default="none")
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args()
    client = api_client(args.base_url, args.api_key)
    report = {"w3_1": await w3(client, args.model, 1), "w3_8": await w3(client, args.model, 8),
              "w1_seq": await w1(client, args.model, args.rows, 1), "w1_8": await w1(client, args.model, args.rows, 8)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
