"""Issue 15: how fast a sequence's KV moves between the live context and RAM, against memcpy of the same bytes;
and what retained prefixes in the live KV cost a decode step.

    python -m bench.kv_move --tokens 1024 --repeat 20

- save: `LlamaContext.save` (llama_state_seq_get_data into a buffer, one copy into bytes); restore:
  `LlamaContext.restore` (llama_state_seq_set_data from the bytes' own buffer) into an empty sequence;
  memcpy: numpy copying a buffer of the same size. Best of `--repeat`, with GB/s and the ratio to memcpy
  (the issue asks RAM → live within 2x of memcpy).
- step: the mean time of a decode step of 8 sequences, one token each, with 0 and with 30 other prefixes of
  `--prefix` tokens kept in the live KV; the ratio shows what `--retain-cells` costs every step, and why
  finished prefixes past it go to RAM instead.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.peers import model_path
from minimill.engine.llama import ContextShape, LlamaContext, LlamaModel, TokenBatch


def fill(ctx: LlamaContext, seq: int, tokens: list[int], start: int = 0, chunk: int = 512) -> None:
    """Compute `tokens` into sequence `seq` at positions start.."""
    batch = TokenBatch(chunk)
    try:
        for offset in range(0, len(tokens), chunk):
            batch.clear()
            for i, token in enumerate(tokens[offset:offset + chunk]):
                batch.add(token, start + offset + i, seq, False)
            assert ctx.decode(batch) == 0
    finally:
        batch.close()


def best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Fastest of `repeat` runs, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def moves(model: LlamaModel, tokens: int, repeat: int, threads: int) -> None:
    ctx = LlamaContext(model, ContextShape(n_ctx=4 * tokens + 256, n_seq_max=4, n_batch=512, threads=threads,
                                           kv_type="bf16"))
    try:
        ids = [(i * 7919) % 20000 + 100 for i in range(tokens)]
        fill(ctx, 0, ids)
        data = ctx.save(0)

        def restore() -> None:
            ctx.remove(1)
            ctx.restore(1, data)

        source = np.frombuffer(data, dtype=np.uint8)
        target = np.empty_like(source)
        t_save = best(lambda: ctx.save(0), repeat)
        t_restore = best(restore, repeat)  # includes freeing the last copy (cheap next to the restore)
        t_memcpy = best(lambda: np.copyto(target, source), repeat)
        gb = len(data) / 1e9
        print(f"KV of {tokens} tokens: {len(data) / 1e6:.1f} MB ({len(data) / tokens / 1024:.1f} KiB/token)")
        print("| move | seconds | GB/s | / memcpy |\n|---|---|---|---|")
        for name, seconds in (("save (live → RAM)", t_save), ("restore (RAM → live)", t_restore),
                              ("memcpy, same bytes", t_memcpy)):
            print(f"| {name} | {seconds * 1e3:.2f} ms | {gb / seconds:.2f} | {seconds / t_memcpy:.2f}x |")
    finally:
        ctx.close()


def step_cost(model: LlamaModel, prefix: int, repeat: int, threads: int) -> None:
    retained_counts = (0, 30)
    results = {}
    for retained in retained_counts:
        n_seq = 8 + retained
        ctx = LlamaContext(model, ContextShape(n_ctx=(retained + 8) * (prefix + repeat + 8) + 256, n_seq_max=n_seq,
                                               n_batch=512, threads=threads, kv_type="bf16"))
        try:
            for seq in range(8, n_seq):  # the retained prefixes, computed first (lower cells)
                fill(ctx, seq, [(seq * 31 + i) % 20000 + 100 for i in range(prefix)])
            for seq in range(8):
                fill(ctx, seq, [(seq * 17 + i) % 20000 + 100 for i in range(64)])
            batch = TokenBatch(8)
            times = []
            for step in range(repeat):
                batch.clear()
                for seq in range(8):
                    batch.add(100 + step, 64 + step, seq, True)
                t0 = time.perf_counter()
                assert ctx.decode(batch) == 0
                times.append(time.perf_counter() - t0)
            batch.close()
            results[retained] = float(np.median(times))
        finally:
            ctx.close()
    print("\n| decode step, 8 sequences x 1 token | median ms | / none retained |\n|---|---|---|")
    for retained, seconds in results.items():
        print(f"| {retained} prefixes of {prefix} tokens live | {seconds * 1e3:.2f} | "
              f"{seconds / results[0]:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--prefix", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = LlamaModel(model_path(args.model), n_gpu_layers=0)
    try:
        print(f"python -m bench.kv_move --model {args.model} --tokens {args.tokens} --prefix {args.prefix} "
              f"--repeat {args.repeat} --threads {args.threads}\n")
        moves(model, args.tokens, args.repeat, args.threads)
        step_cost(model, args.prefix, args.repeat, args.threads)
    finally:
        model.close()


if __name__ == "__main__":
    main()
