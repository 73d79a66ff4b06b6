"""What drafting with a draft model costs here, in-process: one greedy stream (`ignore_eos`) from the served model
without speculation and with the draft model, its wall time, the draft-model calls the engine made, what a draft
token cost to make (`DraftModel.row_seconds`) and the measured step cost by rows (`StepCost`).

    python -m bench.draft_cost --model qwen2.5-coder-1.5b --draft qwen2.5-coder-0.5b --tokens 128

Prints one JSON line per mode. Used in bench/RESULTS.md (issue 16) to say why a draft model does not pay on a
few CPU cores: a verification row and a draft token together cost more than the step share a kept token saves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from minimill.config import EngineConfig
from minimill.engine.draft_model import DraftAsk, DraftModel
from minimill.engine.engine import Engine
from minimill.engine.llama import LlamaModel
from minimill.engine.types import ChoiceDelta, GenerationRequest, SamplingParams
from minimill.metrics import Metrics
from minimill.models.catalogue import resolve

ASK = [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]


async def stream(engine: Engine, prompt: list[int], tokens: int) -> int:
    """One greedy stream of `tokens` tokens; how many came."""
    request = GenerationRequest(request_id="bench", prompt_tokens=tuple(prompt),
                                params=SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True))
    return sum([len(item.token_ids) async for item in engine.generate(request) if isinstance(item, ChoiceDelta)])


def timed_calls(drafts: DraftModel) -> list[tuple[float, int]]:
    """Record each call of `drafts.draft` that asked for something: its seconds and the tokens it drafted."""
    calls: list[tuple[float, int]] = []
    original = drafts.draft

    def timed(asks: list[DraftAsk]) -> dict[int, tuple[int, ...]]:
        started = time.perf_counter()
        out = original(asks)
        if asks:
            calls.append((time.perf_counter() - started, sum(len(d) for d in out.values())))
        return out

    drafts.draft = timed  # type: ignore[method-assign,assignment]
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--draft", default="qwen2.5-coder-0.5b")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=Path(".data"))
    args = parser.parse_args()
    target = LlamaModel(resolve(args.model, args.data_dir).path)
    draft = LlamaModel(resolve(args.draft, args.data_dir).path)
    for method in ("off", "draft"):
        config = EngineConfig(kv_size=4096, max_seqs=8, threads=args.threads, speculation=method,  # type: ignore[arg-type]
                              draft_model=args.draft if method == "draft" else None)
        engine = Engine(args.model, target, config, Metrics(), draft=draft if method == "draft" else None)
        calls = timed_calls(engine.drafts) if engine.drafts is not None else []
        try:
            prompt = engine.chat_tokens(ASK)
            asyncio.run(stream(engine, prompt, 4))  # warm
            started = time.perf_counter()
            got = asyncio.run(stream(engine, prompt, args.tokens))
            seconds = time.perf_counter() - started
            print(json.dumps({"mode": method, "tokens": got, "seconds": round(seconds, 3),
                              "tokens_per_s": round(got / seconds, 2), "draft_calls": len(calls),
                              "draft_seconds": round(sum(c for c, _ in calls), 3),
                              "drafted": dict(engine._drafted), "kept": dict(engine._kept),
                              "draft_token_ms": None if engine.drafts is None or engine.drafts.row_seconds is None
                              else round(engine.drafts.row_seconds * 1000, 1),
                              "step_ms_by_rows": {rows: round(s * 1000, 1) for rows, s in
                                                  sorted(engine.scheduler.step_cost._seconds.items())}}), flush=True)
        finally:
            engine.close()
    target.close()
    draft.close()


if __name__ == "__main__":
    main()
