"""Pinned KV on the real model: caches and sessions kept, moved down a tier, loaded back, exact."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

from minimill.config import EngineConfig
from minimill.engine.engine import Engine
from minimill.engine.llama import LlamaModel
from minimill.engine.types import GenerationRequest, NamedKV, SamplingParams
from minimill.kv.tiers import TierLimits, TierStore
from minimill.metrics import Metrics
from minimill.models.catalogue import SMALLEST
from tests.engine.conftest import Outcome, make_engine

PREFIX = ("You label customer messages. Answer with one word: billing, shipping, or other. " * 6).strip()
GREEDY = {"max_tokens": 12, "temperature": 0, "ignore_eos": True}


def ask(engine: Engine, prompt: list[int], *, reuse: NamedKV | None = None, keep: NamedKV | None = None,
        tenant: str = "t") -> Outcome:
    async def go() -> Outcome:
        out = Outcome({}, {}, {}, None)  # type: ignore[arg-type]
        request = GenerationRequest("r", tuple(prompt), SamplingParams(**GREEDY), tenant=tenant,  # type: ignore[arg-type]
                                    reuse=reuse, keep=keep)
        async for item in engine.generate(request):
            if hasattr(item, "index"):
                out.tokens.setdefault(item.index, []).extend(item.token_ids)  # type: ignore[union-attr]
            else:
                out.usage = item  # type: ignore[assignment]
        return out
    return asyncio.run(go())


def wait_idle(engine: Engine) -> None:
    deadline = time.monotonic() + 10
    while engine.scheduler.has_work and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)


def disk_engine(model: LlamaModel, directory: Path, **overrides: object) -> Engine:
    config = EngineConfig(**{"kv_size": 4096, "max_seqs": 8, "threads": 2, **overrides})  # type: ignore[arg-type]
    tiers = TierStore("smollm2:bf16", directory, TierLimits(ram_bytes=0))
    return Engine(SMALLEST, model, config, Metrics(), tiers)


def test_cache_loaded_from_ram_matches_a_cold_run(model: LlamaModel) -> None:
    prefix = model.tokenize(PREFIX)
    query = prefix + model.tokenize(" Message: where is my parcel? Label:", add_special=False)
    # Room for the cache alone: a finished query's own tokens are evicted, the pinned prefix stays live.
    cold = make_engine(model, retain_cells=0, retain_ram=False)
    warm = make_engine(model, retain_cells=len(prefix) + 16)
    try:
        expected = ask(cold, query)
        assert expected.usage.cached_tokens == 0
        cache = NamedKV("cache:a", "t", time.time() + 60, durable=True)
        ask(warm, prefix, keep=cache)
        assert "cache:a" in warm.scheduler.pins and "cache:a" in warm.tiers
        live = ask(warm, query, reuse=cache)
        assert live.usage.kv_tier == "live" and live.usage.cached_tokens == len(prefix)
        warm._control(warm.scheduler.drop_retained)  # the live copies are gone...
        wait_idle(warm)
        assert "cache:a" not in warm.scheduler.pins
        loaded = ask(warm, query, reuse=cache)  # ...so it comes back from RAM
        assert loaded.usage.kv_tier == "ram" and loaded.usage.cached_tokens == len(prefix)
        assert loaded.tokens == live.tokens == expected.tokens
        warm.scheduler.check()
    finally:
        cold.close()
        warm.close()


def test_cache_survives_a_restart_on_disk_and_bad_files_are_recomputed(model: LlamaModel, tmp_path: Path) -> None:
    first = disk_engine(model, tmp_path)
    prefix = first.tokenize(PREFIX)
    query = prefix + first.tokenize(" Message: I was charged twice. Label:", add_special=False)
    cache = NamedKV("cache:b", "t", time.time() + 60, durable=True)
    try:
        ask(first, prefix, keep=cache)
        expected = ask(first, query, reuse=cache)
    finally:
        first.close()
    second = disk_engine(model, tmp_path)  # a restarted server: nothing live, nothing in RAM
    try:
        got = ask(second, query, reuse=cache)
        assert got.usage.kv_tier == "disk" and got.usage.cached_tokens == len(prefix)
        assert got.tokens == expected.tokens
    finally:
        second.close()
    (path,) = tmp_path.glob("*.kv")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    third = disk_engine(model, tmp_path, retain_cells=0, retain_ram=False)  # only pinned KV is kept
    try:
        got = ask(third, query, reuse=cache)
        assert got.usage.cached_tokens == 0 and got.usage.kv_tier is None  # recomputed, not loaded
        assert third.tiers.counters.corrupt == 1 and not path.exists()
        assert got.tokens == expected.tokens
        # A reference that carries the cache's tokens has its prefix prefilled again, pinned and stored anew.
        rebuilt = ask(third, query, reuse=replace(cache, tokens=tuple(prefix)))
        assert rebuilt.usage.kv_tier is None and rebuilt.usage.cached_tokens == len(prefix)
        assert rebuilt.tokens == expected.tokens
        wait_idle(third)
        assert path.exists() and third.tiers.tier_of("cache:b") == "disk"  # stored anew
    finally:
        third.close()


def test_session_turn_reuses_prompt_and_answer(model: LlamaModel) -> None:
    # nothing stays live, and only pinned KV goes to RAM: the session comes back from the tier store
    engine = make_engine(model, retain_cells=0, retain_ram=False)
    try:
        session = NamedKV("session:t:1", "t", time.time() + 15)
        turn1 = engine.tokenize("User: name three colours.\nAssistant:")
        first = ask(engine, turn1, reuse=session, keep=session)
        history = turn1 + first.tokens[0]
        ask(engine, engine.tokenize("Another tenant's request in between."), tenant="u")  # live KV trimmed to 0
        turn2 = history + engine.tokenize("\nUser: and three animals?\nAssistant:", add_special=False)
        second = ask(engine, turn2, reuse=session, keep=session)
        # Everything computed in turn 1 is reused: the prompt and all answer tokens but the last sampled one.
        assert second.usage.cached_tokens == len(history) - 1 and second.usage.kv_tier == "ram"
        assert "session:t:1" in engine.tiers
        other_tenant = ask(engine, turn2, tenant="u")
        assert other_tenant.usage.cached_tokens == 0
    finally:
        engine.close()


def test_a_session_past_its_ttl_is_an_ordinary_prefix_found_in_ram(model: LlamaModel) -> None:
    # Nothing stays live; the session's KV was only in the tier store when its TTL passed.
    engine = make_engine(model, retain_cells=0)
    try:
        session = NamedKV("session:t:2", "t", time.time() + 60, ttl=0.5)
        turn1 = engine.tokenize(f"{PREFIX}\nUser: name three rivers.\nAssistant:")  # long enough to keep
        history = turn1 + ask(engine, turn1, reuse=session, keep=session).tokens[0]
        ask(engine, engine.tokenize("Another tenant's request in between."), tenant="u")  # live KV trimmed to 0
        wait_idle(engine)
        assert "session:t:2" not in engine.scheduler.pins and engine.tiers.tier_of("session:t:2") == "ram"
        time.sleep(0.6)
        turn2 = history + engine.tokenize("\nUser: and three lakes?\nAssistant:", add_special=False)
        second = ask(engine, turn2, reuse=session)
        # Reused as any prefix is (not as the session: kv_tier is None), all of turn 1 but its last token.
        assert second.usage.cached_tokens == len(history) - 1 and second.usage.kv_tier is None
        assert engine.scheduler.ram.counters.hits == 1 and "session:t:2" not in engine.tiers
    finally:
        engine.close()


def test_pinned_prefix_outlives_unpinned_ones_under_pressure(model: LlamaModel) -> None:
    engine = make_engine(model, retain_cells=600)
    try:
        prefix = engine.tokenize(PREFIX)
        cache = NamedKV("cache:p", "t", time.time() + 60)
        ask(engine, prefix, keep=cache)
        for i in range(8):  # unpinned prefixes fill the retention budget and push each other out
            ask(engine, engine.tokenize(f"Filler text number {i}: " + "lorem ipsum dolor " * 20))
        assert "cache:p" in engine.scheduler.pins
        assert engine.scheduler.counters.evictions >= 4
        expired = NamedKV("cache:old", "t", time.time() - 1)
        ask(engine, engine.tokenize("An expired pin " * 30), keep=expired)
        ask(engine, engine.tokenize("Pressure " * 300))
        wait_idle(engine)  # the idle engine trims what finished sequences alone hold to the cap
        assert "cache:old" not in engine.scheduler.pins  # expired: an ordinary prefix, evicted first
        assert "cache:p" in engine.scheduler.pins
        assert engine.scheduler.cells.used <= 600 + len(prefix)
        engine.scheduler.check()
    finally:
        engine.close()
