"""A plain client's interleaved chats (whole history resent, no session_id) reuse their history after it left
the live KV: the finished prefix was saved to RAM and is loaded back, reported in `cached_tokens` and billed
at the cached price. (The exact count per turn is also asserted on the scheduler, tests/unit.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tests.api.conftest import Server, serve

TURNS = 3


def run_chats(server: Server, chats: int) -> list[tuple[int, int, int, float, float]]:
    """Turn t of every chat before turn t+1 of any; per request: prompt, cached and completion tokens, and
    the billed input and cached-input cost."""
    client = server.client()
    histories = [[{"role": "system", "content": f"You are assistant number {c}. Answer in one short line."}]
                 for c in range(chats)]
    seen = []
    for turn in range(TURNS):
        for c, history in enumerate(histories):
            history.append({"role": "user", "content": f"Chat {c}, question {turn}: name a colour."})
            reply = client.chat.completions.create(model="smollm2-135m", messages=history,  # type: ignore[arg-type]
                                                   max_tokens=8, temperature=0, extra_body={"ignore_eos": True})
            history.append({"role": "assistant", "content": reply.choices[0].message.content or ""})
            usage = reply.usage
            assert usage is not None and usage.prompt_tokens_details is not None
            cost = usage.model_extra["cost"]  # type: ignore[index]
            seen.append((usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens or 0,
                         usage.completion_tokens, cost["input"], cost["cached_input"]))
    return seen


def serve_chats(path: Path, chats: int, **overrides: object) -> tuple[list[tuple[int, int, int, float, float]],
                                                                      dict[str, float]]:
    """`run_chats` on a fresh server; also its counters of prefixes loaded back from RAM and from disk."""
    servers: Iterator[Server] = serve(path, kv_size=4096, max_seqs=8, **overrides)
    server = next(servers)
    try:
        seen = run_chats(server, chats)
        return seen, {name: server.metric(f"minimill_{name}_prefix_hits_total") for name in ("ram", "disk")}
    finally:
        servers.close()


def assert_history_reused(seen: list[tuple[int, int, int, float, float]], chats: int) -> None:
    """Every turn after the first reused its chat's history, exactly as far as it was computed and resent."""
    for turn in range(1, TURNS):
        for c in range(chats):
            prompt, cached, _, _, _ = seen[turn * chats + c]
            before, _, answer, _, _ = seen[(turn - 1) * chats + c]
            # The previous turn's KV holds its prompt and all of its answer but the last sampled token; the
            # resent history shares all of the prompt and as much of the answer as tokenizes the same.
            assert before <= cached <= before + answer - 1 and cached < prompt, (turn, c, seen)


def test_history_evicted_from_the_live_kv_is_found_in_ram(tmp_path: Path) -> None:
    # 32 chats, nothing finished stays live (the default): every later turn must find its history in RAM.
    chats = 32
    seen, hits = serve_chats(tmp_path, chats)
    assert_history_reused(seen, chats)
    assert hits == {"ram": chats * (TURNS - 1), "disk": 0}
    # Billed as cached: every cached token at one price, every computed one at the other.
    cached_rates = {round(cost / cached, 15) for _, cached, _, _, cost in seen if cached}
    input_rates = {round(cost / (prompt - cached), 15) for prompt, cached, _, cost, _ in seen}
    assert len(cached_rates) == 1 and len(input_rates) == 1 and cached_rates.pop() < input_rates.pop()


def test_without_ram_the_evicted_history_is_recomputed(tmp_path: Path) -> None:
    # The control: no RAM for finished prefixes and nothing kept live, so the history is computed again.
    chats = 6
    seen, hits = serve_chats(tmp_path, chats, ram_tier_bytes=0)
    for turn in range(1, TURNS):
        for c in range(chats):
            assert seen[turn * chats + c][1] < seen[(turn - 1) * chats + c][0]
    assert hits == {"ram": 0, "disk": 0}


def test_history_that_fell_out_of_ram_is_read_back_from_disk(tmp_path: Path) -> None:
    # RAM for about two finished chats and five others between two turns of each: every later turn's history
    # fell out of RAM to disk (DATA_DIR/kv/.../prefixes) and is read back from there.
    chats = 6
    seen, hits = serve_chats(tmp_path, chats, ram_tier_bytes=3_000_000, prefix_disk_bytes=1 << 30)
    assert_history_reused(seen, chats)
    assert hits == {"ram": chats * (TURNS - 1), "disk": chats * (TURNS - 1)}  # each read back to RAM, then loaded
    assert list(tmp_path.glob("kv/*/prefixes/*.kv"))  # what is still on disk when the server stops
