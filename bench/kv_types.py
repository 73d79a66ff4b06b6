"""KV element types: bytes per token, and what quantising the KV costs in quality.

    python -m bench.kv_types --rows 16

For f16, bf16, q8_0 and q4_0: bytes per token of one sequence's serialised KV (the unit the RAM
and disk tiers store), greedy agreement with f16 on W1 rows (the same 24 tokens), and the mean
log-likelihood of a fixed text (teacher-forced) minus f16's.
"""

from __future__ import annotations

import argparse
import asyncio

from bench.client import WORKLOADS
from bench.peers import model_path
from minimill.config import EngineConfig
from minimill.engine.engine import Engine
from minimill.engine.llama import ContextShape, LlamaContext, LlamaModel, TokenBatch
from minimill.engine.runner import log_softmax
from minimill.engine.types import ChoiceDelta, GenerationRequest, SamplingParams
from minimill.metrics import Metrics

KV_TYPES = ("f16", "bf16", "q8_0", "q4_0")


def bytes_per_token(model: LlamaModel, kv_type: str, tokens: list[int]) -> float:
    """Size of one sequence's saved KV divided by its token count."""
    ctx = LlamaContext(model, ContextShape(n_ctx=4096, n_seq_max=1, n_batch=2048, threads=2, kv_type=kv_type))
    try:
        batch = TokenBatch(2048)
        for pos, token in enumerate(tokens):
            batch.add(token, pos, 0, False)
        assert ctx.decode(batch) == 0
        return len(ctx.save(0)) / len(tokens)
    finally:
        ctx.close()


def mean_loglik(model: LlamaModel, kv_type: str, tokens: list[int], chunk: int = 256) -> float:
    """Teacher-forced mean log-probability of tokens[1:]; chunked so later chunks read the KV."""
    ctx = LlamaContext(model, ContextShape(n_ctx=4096, n_seq_max=1, n_batch=chunk, threads=2, kv_type=kv_type))
    total = 0.0
    try:
        batch = TokenBatch(chunk)
        for start in range(0, len(tokens) - 1, chunk):
            batch.clear()
            rows = range(start, min(start + chunk, len(tokens) - 1))
            for pos in rows:
                batch.add(tokens[pos], pos, 0, True)
            assert ctx.decode(batch) == 0
            for i, pos in enumerate(rows):
                total += float(log_softmax(ctx.logits(i))[tokens[pos + 1]])
        return total / (len(tokens) - 1)
    finally:
        ctx.close()


async def greedy_rows(engine: Engine, rows: list[str], prefix: str) -> list[tuple[int, ...]]:
    """24 greedy tokens for each W1 row, one after the other."""
    outputs = []
    for row in rows:
        prompt = engine.chat_tokens([{"role": "user", "content": prefix + row}])
        request = GenerationRequest("kv", tuple(prompt), SamplingParams(max_tokens=24, temperature=0))
        tokens: list[int] = []
        async for item in engine.generate(request):
            if isinstance(item, ChoiceDelta):
                tokens.extend(item.token_ids)
        outputs.append(tuple(tokens))
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=16)
    args = parser.parse_args()
    model = LlamaModel(model_path(), n_gpu_layers=0)
    prefix = (WORKLOADS / "w1_prefix.txt").read_text()
    rows = (WORKLOADS / "w1_rows.txt").read_text().splitlines()[: args.rows]
    text = model.tokenize(prefix + "\n".join(rows[:20]), add_special=False)[:2048]
    results = {}
    for kv_type in KV_TYPES:
        engine = Engine("kv", model, EngineConfig(kv_size=8192, max_seqs=4, threads=2, kv_type=kv_type), Metrics())
        try:
            greedy = asyncio.run(greedy_rows(engine, rows, prefix))
        finally:
            engine.close()
        results[kv_type] = (bytes_per_token(model, kv_type, text[:1024]), greedy, mean_loglik(model, kv_type, text))
    base_bytes, base_greedy, base_ll = results["f16"]
    print("| KV type | bytes/token | vs f16 | W1 rows with f16's greedy output | mean log-lik − f16's |")
    print("|---|---|---|---|---|")
    for kv_type, (size, greedy, ll) in results.items():
        same = sum(a == b for a, b in zip(greedy, base_greedy, strict=True))
        print(f"| {kv_type} | {size:,.0f} | {size / base_bytes:.2f}x | {same}/{len(rows)} | {ll - base_ll:+.4f} |")
    print(f"\nf16 mean log-likelihood over {len(text) - 1} tokens: {base_ll:.4f}")


if __name__ == "__main__":
    main()
