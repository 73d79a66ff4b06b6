"""Measure a model's prefill and decode throughput on this host with the real engine, for its prices.

Run in a child process (`python -m minimill.engine.calibrate MODEL.gguf THREADS`), like the self-test:
the measurement loads the model and a context of its own, and a crash or a slow host costs the parent
nothing but a missing figure. The child prints one JSON object.

- prefill: one long prompt with `max_tokens: 1`, after a warm-up; tokens / seconds.
- decode: `streams` concurrent sequences with `ignore_eos`, counted from the moment every stream has
  its first token (prefill done) to the end; tokens after the first / seconds. That is the rate the
  engine sells output at when it is busy, which is what a price must cover.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from minimill.config import EngineConfig

CALIBRATE_TIMEOUT_SECONDS = 900.0


@dataclass(frozen=True, slots=True)
class Measured:
    """What one calibration found: tokens per second of prefill and of decode, KV bytes per token."""

    prefill_tokens_per_second: float
    decode_tokens_per_second: float
    kv_bytes_per_token: int
    threads: int
    streams: int


class CalibrationFailed(RuntimeError):
    """The child did not produce a measurement; the message says why."""


def run(model_path: Path, threads: int, timeout: float = CALIBRATE_TIMEOUT_SECONDS) -> Measured:
    """Calibrate `model_path` with `threads` CPU threads in a child process."""
    try:
        done = subprocess.run([sys.executable, "-m", "minimill.engine.calibrate", str(model_path), str(threads)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise CalibrationFailed(f"calibrating {model_path.name} took more than {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        raise CalibrationFailed(f"calibrating {model_path.name} failed (exit {done.returncode}): {tail}")
    return Measured(**json.loads(done.stdout.strip().splitlines()[-1]))


def measure(model_path: Path, threads: int, *, prompt_tokens: int = 512, streams: int = 8,
            decode_tokens: int = 48) -> Measured:
    """The measurement itself (in this process)."""
    from minimill.engine.engine import Engine
    from minimill.engine.llama import LlamaModel
    from minimill.engine.types import ChoiceDelta, GenerationRequest, SamplingParams
    from minimill.metrics import Metrics

    model = LlamaModel(model_path)
    config = EngineConfig(kv_size=max(4096, prompt_tokens * 2 + streams * (decode_tokens + 64)),
                          max_seqs=streams + 2, threads=threads, step_tokens=prompt_tokens, retain_cells=0)
    engine = Engine("calibrate", model, config, Metrics())

    def prompt(tag: str, length: int) -> tuple[int, ...]:
        # Distinct from the first token on, so no run reuses another's prefix.
        words = " ".join(f"{tag} item {i} costs {(i * 37) % 101} units." for i in range(length))
        return tuple(model.tokenize(words)[:length])

    async def timed(tag: str, length: int, max_tokens: int) -> tuple[float, float, int]:
        """(seconds to first token, seconds to the end, tokens) of one request."""
        start, first, count = time.perf_counter(), 0.0, 0
        request = GenerationRequest(tag, prompt(tag, length),
                                    SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))
        async for item in engine.generate(request):
            if isinstance(item, ChoiceDelta):
                count += len(item.token_ids)
                if count and not first:
                    first = time.perf_counter() - start
        return first, time.perf_counter() - start, count

    async def main() -> Measured:
        await timed("warm", 64, 2)
        _, prefill_s, _ = await timed("prefill", prompt_tokens, 1)
        runs = await asyncio.gather(*(timed(f"stream{s}", 16, decode_tokens) for s in range(streams)))
        decode_from = max(first for first, _, _ in runs)
        decode_s = max(end for _, end, _ in runs) - decode_from
        after_first = sum(count - 1 for _, _, count in runs)
        return Measured(prefill_tokens_per_second=round(prompt_tokens / prefill_s, 2),
                        decode_tokens_per_second=round(after_first / decode_s, 2),
                        kv_bytes_per_token=model.kv_bytes_per_token(config.kv_type), threads=threads,
                        streams=streams)

    try:
        return asyncio.run(main())
    finally:
        engine.close()
        model.close()


if __name__ == "__main__":
    found = measure(Path(sys.argv[1]), int(sys.argv[2]))
    sys.stdout.write(json.dumps(asdict(found)) + "\n")
