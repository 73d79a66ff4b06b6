"""Routing among replicas without Ray: routing keys from a request, what a replica holds, and the choice."""

from __future__ import annotations

import json
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from minimill.scale.affinity import (
    BLOCK_CHARS,
    IMBALANCE,
    Holdings,
    InFlight,
    ReplicaView,
    RoutingKeys,
    block_digests,
    choose,
    keys_for,
    prompt_text,
)

CHAT = "/v1/chat/completions"
SYSTEM = "You clean CSV rows. " * 40  # 800 characters: 12 whole blocks


def chat(*contents: str, key: str = "k1", **extra: object) -> RoutingKeys:
    messages = [{"role": "system" if i == 0 else "user", "content": c} for i, c in enumerate(contents)]
    body = json.dumps({"model": "m", "messages": messages, **extra}).encode()
    return keys_for(CHAT, {"authorization": f"Bearer {key}"}, body)


def view(name: str, in_flight: int = 0, *served: RoutingKeys) -> ReplicaView:
    replica = ReplicaView(name, in_flight)
    for keys in served:
        replica.holdings.add(keys)
    return replica


def test_keys_name_the_tenant_session_cache_and_prompt_blocks() -> None:
    keys = chat(SYSTEM, "row 1", session_id="s", cache_id="cache_1")
    assert keys.tenant and keys.session and keys.cache_id == "cache_1"
    assert len(keys.blocks) == len(prompt_text({"messages": [{"role": "system", "content": SYSTEM},
                                                              {"role": "user", "content": "row 1"}]})) // BLOCK_CHARS
    other = chat(SYSTEM, "row 1", key="k2", session_id="s")
    assert other.tenant != keys.tenant and other.session != keys.session  # one tenant's session is not another's
    assert not set(other.blocks) & set(keys.blocks)  # nor its prefixes
    assert chat(SYSTEM, "row 1", prompt_cache_key="s").session == keys.session  # OpenAI's name for the same thing


def test_requests_without_a_prompt_are_keyed_by_tenant_alone() -> None:
    headers = {"authorization": "Bearer k1"}
    assert keys_for(CHAT, headers, b"{not json") == RoutingKeys(keys_for(CHAT, headers, b"").tenant)
    assert keys_for(CHAT, headers, b"[1, 2]").blocks == ()
    assert keys_for("/health", headers, b'{"prompt": "x"}').blocks == ()
    assert keys_for(CHAT, {}, b"").tenant == ""
    lone = b'{"messages": [{"role": "user", "content": "\\ud800 lone' + b"x" * 200 + b'"}]}'
    assert keys_for(CHAT, headers, lone).blocks and keys_for(CHAT, headers, lone).seed  # a lone surrogate hashes
    deep = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert keys_for(CHAT, headers, deep).blocks == ()  # a hostile body costs the router nothing


def test_completion_prompts_are_keyed_too() -> None:
    headers = {"authorization": "Bearer k1"}
    one = keys_for("/v1/completions", headers, json.dumps({"prompt": SYSTEM}).encode())
    listed = keys_for("/v1/completions", headers, json.dumps({"prompt": [SYSTEM, "x"]}).encode())
    tokens = keys_for("/v1/completions", headers, json.dumps({"prompt": list(range(400))}).encode())
    assert one.blocks and one.blocks == listed.blocks and tokens.blocks


@given(st.text(min_size=0, max_size=600), st.text(min_size=0, max_size=600))
def test_a_longer_prompt_extends_the_digests_of_its_prefix(head: str, tail: str) -> None:
    short, long = block_digests("t", head), block_digests("t", head + tail)
    assert long[: len(short)] == short
    assert len(long) == len(head + tail) // BLOCK_CHARS


@given(st.integers(min_value=0, max_value=20), st.text(min_size=1, max_size=300))
def test_matched_counts_the_leading_blocks_served(shared_blocks: int, rest: str) -> None:
    base = "".join(chr(65 + i % 26) * BLOCK_CHARS for i in range(shared_blocks))
    holdings = Holdings()
    holdings.add(RoutingKeys("t", blocks=block_digests("t", base + "\0" * BLOCK_CHARS)))
    asked = block_digests("t", base + rest)
    assert holdings.matched(asked) >= shared_blocks
    assert holdings.matched(block_digests("u", base + rest)) == 0  # another tenant matches nothing


def test_holdings_are_bounded_and_forget_the_least_recent() -> None:
    holdings = Holdings(limit=4)
    first = RoutingKeys("t", session="s0")
    holdings.add(first)
    for i in range(1, 5):
        holdings.add(RoutingKeys("t", session=f"s{i}"))
    assert not holdings.holds(first) and holdings.holds(RoutingKeys("t", session="s4"))
    copy = Holdings()
    copy.merge(holdings.summary())
    assert copy.summary() == holdings.summary()


def test_a_session_goes_to_its_replica_unless_it_is_overloaded() -> None:
    turn1 = chat(SYSTEM, "hi", session_id="s")
    replicas = [view("a", 3), view("b", 0), view("c", 1, turn1)]
    assert choose(turn1, replicas) .ranked[0] == "c"
    assert choose(turn1, replicas).reason == "session"
    assert choose(turn1, replicas).ranked == ("c", "b", "a")  # then the others, least loaded first
    replicas[2].in_flight = IMBALANCE + 1  # the owner is too far behind: the request goes where it waits less
    choice = choose(turn1, replicas)
    assert choice.ranked[0] == "b" and choice.reason == "room"  # the least loaded of those holding least


def test_a_cache_goes_to_the_replica_that_made_it() -> None:
    made = view("b")
    made.holdings.add_cache("cache_9")
    asked = chat("short", cache_id="cache_9")
    assert choose(asked, [view("a"), made]).ranked[0] == "b"
    assert choose(chat("short", cache_id="cache_other"), [view("a", 1), made]).ranked[0] == "b"  # by load


def test_the_longest_prefix_wins_and_a_tiny_match_counts_as_none() -> None:
    system_only = chat(SYSTEM)
    with_history = chat(SYSTEM, "turn one " * 20)
    replicas = [view("a", 0), view("b", 2, system_only), view("c", 4, with_history)]
    assert choose(chat(SYSTEM, "turn one " * 20, "turn two"), replicas).ranked[0] == "c"
    assert choose(chat(SYSTEM, "another row"), replicas).ranked[0] == "b"  # ties on the prefix: less loaded
    tiny = chat(SYSTEM[:BLOCK_CHARS] + "x" * 20 * BLOCK_CHARS)  # 1 block of 21 shared: below MIN_MATCH
    assert choose(tiny, replicas).reason == "room" and choose(tiny, replicas).ranked[0] == "a"  # a new prefix


def test_no_replicas_no_choice_and_new_prefixes_spread_evenly() -> None:
    assert choose(chat("x"), []).ranked == ()
    replicas = [view(name) for name in "abcd"]
    firsts = Counter(choose(chat(f"Conversation {i}. " + SYSTEM), replicas).ranked[0] for i in range(400))
    assert set(firsts) == set("abcd") and min(firsts.values()) > 60  # about 100 each
    same = {choose(chat("Conversation 1. " + SYSTEM, f"row {i}"), replicas).ranked[0] for i in range(20)}
    assert len(same) == 1  # one prefix, one replica, even before any was served
    short = {choose(chat("Hi"), replicas).ranked[0] for _ in range(20)}
    assert len(short) == 1  # one short prompt (no whole block) too: a repeat finds its KV
    assert len({choose(chat(f"Hi {i}"), replicas).ranked[0] for i in range(40)}) == 4  # others spread
    anywhere = Counter(choose(RoutingKeys("t"), replicas).ranked[0] for _ in range(400))
    assert min(anywhere.values()) > 60  # no prompt: no reason to prefer one


def test_new_prefixes_go_where_fewest_are_held_so_memory_fills_evenly() -> None:
    replicas = [view("a"), view("b")]
    placed: Counter[str] = Counter()
    for i in range(16):  # as the router does: each choice is held at once; "a" is always the busier one
        keys = chat(f"Job {i}. " + SYSTEM)
        replicas[0].in_flight = 3
        choice = choose(keys, replicas)
        assert choice.reason == "room"
        placed[choice.ranked[0]] += 1
        next(r for r in replicas if r.id == choice.ranked[0]).holdings.add(keys)
    assert placed == {"a": 8, "b": 8}  # load alone would have sent all 16 to "b"
    rows = {choose(chat(f"Job {i}. " + SYSTEM, "a row"), replicas).ranked[0] for i in range(16)}
    assert rows == {"a", "b"}  # and each prefix's rows follow it
    replicas[0].in_flight = 3 + IMBALANCE + 1  # too busy: a new prefix goes to the other, however full
    replicas[1].holdings.add(chat("Job 99. " + SYSTEM * 3))
    assert choose(chat("Job 100. " + SYSTEM), replicas).ranked[0] == "b"


def test_in_flight_counts_from_the_choice_and_moves_where_the_request_was_sent() -> None:
    flight = InFlight(unconfirmed_seconds=60)
    flight.chosen("r1", "a", now=0)
    assert (flight.on("a"), flight.on("b")) == (1, 0)
    flight.sent("r1", "b", now=1)  # the choice refused it: Ray sent it to the next one
    assert (flight.on("a"), flight.on("b"), flight.where("r1")) == (0, 1, "b")
    flight.sent("r1", "b", now=2)  # told twice: still one
    assert flight.on("b") == 1
    flight.finished("r1")
    assert (flight.on("b"), flight.where("r1")) == (0, None)


def test_a_request_that_finishes_before_it_is_confirmed_is_not_counted_again() -> None:
    # Ray fires the completion callback and the routing callback in no fixed order: a short answer can finish
    # first. Counting it then would leave its replica loaded forever and send every later request elsewhere.
    flight = InFlight(unconfirmed_seconds=60, remember=2)
    flight.chosen("r1", "a", now=0)
    flight.finished("r1")
    flight.sent("r1", "a", now=1)
    assert flight.on("a") == 0
    for request in ("r2", "r3"):  # only the last `remember` finished requests are remembered
        flight.finished(request)
    flight.sent("r1", "a", now=2)
    assert flight.on("a") == 1


def test_chosen_but_never_sent_stops_counting_and_a_dead_replica_counts_nothing() -> None:
    flight = InFlight(unconfirmed_seconds=60)
    flight.chosen("waiting", "a", now=0)
    flight.chosen("sent", "a", now=0)
    flight.sent("sent", "a", now=1)
    flight.expire(now=30)
    assert flight.on("a") == 2
    flight.expire(now=61)
    assert (flight.on("a"), flight.where("waiting"), flight.where("sent")) == (1, None, "a")
    flight.chosen("other", "b", now=62)
    flight.forget("a")
    assert (flight.on("a"), flight.on("b")) == (0, 1)


def test_a_replicas_own_count_forgets_the_oldest_requests_counted_beyond_it() -> None:
    flight = InFlight()
    for i in range(4):
        flight.sent(f"r{i}", "a", now=i)
    flight.sent("new", "a", now=9.5)
    flight.reported("a", 1, now=10)  # r0..r2 finished unseen; "new" (within the grace second) may not be there yet
    assert flight.on("a") == 2 and flight.where("r3") == "a" and flight.where("new") == "a"
    assert flight.where("r0") is None
    flight.reported("a", 5, now=11)  # a higher count (other routers' requests) changes nothing
    assert flight.on("a") == 2
