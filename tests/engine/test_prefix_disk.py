"""A finished prefix that fell out of RAM is written to disk and read back when its history is resent, exact."""

from __future__ import annotations

from pathlib import Path

from minimill.config import EngineConfig
from minimill.engine.engine import Engine
from minimill.engine.llama import LlamaModel
from minimill.kv.prefix_disk import PrefixDisk
from minimill.metrics import Metrics
from minimill.models.catalogue import SMALLEST
from tests.engine.conftest import collect, make_engine, run
from tests.engine.test_named_kv import wait_idle

GREEDY = {"max_tokens": 16, "temperature": 0, "ignore_eos": True}


def test_a_history_that_fell_out_of_ram_comes_back_from_disk_and_answers_as_a_cold_run(model: LlamaModel,
                                                                                    tmp_path: Path) -> None:
    disk = PrefixDisk("smollm2:bf16", tmp_path, limit_bytes=1 << 30)
    # RAM for about one finished chat (~115 tokens of ~23 KB each): the earlier ones fall out to disk.
    config = EngineConfig(kv_size=4096, max_seqs=8, threads=2, ram_tier_bytes=3 << 20)
    engine = Engine(SMALLEST, model, config, Metrics(), prefixes=disk)
    cold = make_engine(model, retain_cells=0, retain_ram=False)
    try:
        line = "You help a gardener plan a vegetable patch, one short step at a time. "
        chats = [engine.tokenize(f"Chat {i}. " + line * 6) for i in range(3)]
        answers = [run(collect(engine, chat, tenant="t", **GREEDY)) for chat in chats]  # type: ignore[arg-type]
        wait_idle(engine)
        assert disk.counters.saved >= 2 and engine.scheduler.ram.counters.evicted >= 2
        follow = chats[0] + answers[0].tokens[0] + engine.tokenize("\nAnd then?", add_special=False)  # type: ignore[attr-defined]
        other = run(collect(engine, follow, tenant="u", **GREEDY))  # type: ignore[arg-type]
        assert other.usage.cached_tokens == 0 and disk.counters.hits == 0  # another tenant's history: not found
        got = run(collect(engine, follow, tenant="t", **GREEDY))  # type: ignore[arg-type]
        assert disk.counters.hits == 1
        # The chat's prompt and its answer but the last sampled token were computed, saved, and are reused.
        assert got.usage.cached_tokens == len(chats[0]) + len(answers[0].tokens[0]) - 1  # type: ignore[attr-defined]
        expected = run(collect(cold, follow, tenant="t", **GREEDY))  # type: ignore[arg-type]
        assert expected.usage.cached_tokens == 0 and got.tokens == expected.tokens  # type: ignore[attr-defined]
        engine.scheduler.check()
    finally:
        engine.close()
        cold.close()
        disk.close()
