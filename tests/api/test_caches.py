"""Prompt caches, sessions and billing through the official openai client on a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from minimill.api.auth import tenant_of
from minimill.billing.prices import money
from tests.api.conftest import Server, serve

MODEL = "smollm2-135m"
SYSTEM = ("You are a careful assistant for a bakery. Answer in one short sentence. Prices: bread 3 euros, "
          "croissant 2 euros, cake 20 euros. Opening hours: 7 to 19, closed on Mondays. ") * 3
PREFIX = [{"role": "system", "content": SYSTEM}]
QUESTION = [{"role": "user", "content": "When are you open?"}]
GREEDY: dict[str, Any] = {"max_tokens": 12, "temperature": 0}
M = Decimal(1_000_000)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Three tenants (one admin) and no unpinned retention: only caches and sessions keep KV."""
    yield from serve(tmp_path_factory.mktemp("data"), kv_size=4096, max_seqs=8, retain_cells=0, retain_ram=False,
                     api_keys=["alice", "bob", "root", "carol"], admin_keys=["root"])


def call(client: openai.OpenAI, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return getattr(client, method)(path, cast_to=object, **({"body": body} if body is not None else {}))


def chat(client: openai.OpenAI, messages: list[dict[str, str]], **extra: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=messages, extra_body=extra or None,  # type: ignore[arg-type]
                                          **GREEDY)


def price(server: Server, name: str) -> Decimal:
    return server.runtime.meter.prices.for_model(MODEL).__getattribute__(name)  # type: ignore[no-any-return]


def usd(value: Decimal) -> float:
    return float(value)


def test_cache_lifecycle_reuse_and_exact_bills(keyed: Server) -> None:
    alice, bob = keyed.client("alice"), keyed.client("bob")
    cache = call(alice, "post", "/caches", {"model": MODEL, "messages": PREFIX, "ttl_seconds": 600})
    n = cache["tokens"]
    assert cache["object"] == "prompt_cache" and cache["id"].startswith("cache_") and n > 100
    assert cache["tier"] in ("live", "ram") and cache["expires_at"] - cache["created_at"] in (599, 600, 601)
    cost = cache["usage"]["cost"]
    assert cost["input"] == usd(n * price(keyed, "input") / M)
    assert cost["cache_storage"] == usd(n * Decimal(600) / 3600 * price(keyed, "cache_storage") / M)

    assert [c["id"] for c in call(alice, "get", "/caches")["data"]] == [cache["id"]]
    assert call(alice, "get", f"/caches/{cache['id']}")["tokens"] == n

    hit = chat(alice, PREFIX + QUESTION, cache_id=cache["id"])
    cold = chat(bob, PREFIX + QUESTION)  # another tenant: nothing of alice's is reused
    assert hit.usage.prompt_tokens_details.cached_tokens == n
    assert cold.usage.prompt_tokens_details.cached_tokens == 0
    assert hit.choices[0].message.content == cold.choices[0].message.content
    p = hit.usage.prompt_tokens
    billed = hit.usage.model_extra["cost"]  # type: ignore[index]
    assert billed["cached_input"] == usd(n * price(keyed, "cached_input") / M)
    assert billed["input"] == usd((p - n) * price(keyed, "input") / M)
    assert billed["output"] == usd(hit.usage.completion_tokens * price(keyed, "output") / M)
    assert billed["input"] + billed["cached_input"] < 0.3 * cold.usage.model_extra["cost"]["input"]  # type: ignore[index]

    extended = call(alice, "patch", f"/caches/{cache['id']}", {"ttl_seconds": 1200})
    assert extended["expires_at"] >= cache["expires_at"] + 590
    rows = {e.kind: e for e in keyed.runtime.meter.ledger.entries(tenant_of("alice"))}
    extension = rows["cache.extend"]
    assert extension.stored_token_seconds / n == Decimal(str(round(extension.stored_token_seconds / n, 3)))
    storage = extension.stored_token_seconds / 3600 * price(keyed, "cache_storage") / M
    assert extension.cost.cache_storage == money(storage)

    deleted = call(alice, "delete", f"/caches/{cache['id']}")
    assert deleted == {"id": cache["id"], "object": "prompt_cache.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        call(alice, "get", f"/caches/{cache['id']}")
    with pytest.raises(openai.NotFoundError):
        chat(alice, PREFIX + QUESTION, cache_id=cache["id"])


def test_cache_errors(keyed: Server) -> None:
    alice, bob = keyed.client("alice"), keyed.client("bob")
    cache = call(alice, "post", "/caches", {"model": MODEL, "prompt": SYSTEM, "ttl_seconds": 60})
    for client, cid in ((alice, "cache_nope"), (bob, cache["id"])):
        with pytest.raises(openai.NotFoundError) as caught:
            chat(client, PREFIX + QUESTION, cache_id=cid)
        assert caught.value.body["code"] == "cache_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        call(bob, "delete", f"/caches/{cache['id']}")
    with pytest.raises(openai.BadRequestError) as caught:
        alice.completions.create(model=MODEL, prompt="Something else entirely", max_tokens=2,
                                 extra_body={"cache_id": cache["id"]})
    assert caught.value.body["code"] == "cache_prefix_mismatch"  # type: ignore[index]
    assert "does not start with" in caught.value.body["message"]  # type: ignore[index]
    bad_bodies = [{"model": MODEL, "prompt": "x", "ttl_seconds": 0},
                  {"model": MODEL, "prompt": "x", "ttl_seconds": 10 ** 9},
                  {"model": MODEL, "prompt": "x", "messages": PREFIX},
                  {"model": MODEL},
                  {"model": MODEL, "prompt": [10 ** 9]},
                  {"model": MODEL, "prompt": ""}]
    for body in bad_bodies:
        with pytest.raises(openai.BadRequestError):
            call(alice, "post", "/caches", body)
    with pytest.raises(openai.NotFoundError):
        call(alice, "post", "/caches", {"model": "no-such-model", "prompt": "x"})
    with pytest.raises(openai.PermissionDeniedError):
        call(alice, "post", "/caches", {"model": MODEL, "prompt": "x", "shared": True})
    with pytest.raises(openai.BadRequestError):
        call(alice, "patch", f"/caches/{cache['id']}", {"ttl_seconds": -1})
    with pytest.raises(openai.BadRequestError):
        chat(alice, QUESTION, session_ttl_seconds=5)


def test_expired_cache_is_gone(keyed: Server) -> None:
    alice = keyed.client("alice")
    cache = call(alice, "post", "/caches", {"model": MODEL, "prompt": "A short-lived prefix. " * 10, "ttl_seconds": 1})
    time.sleep(1.2)
    with pytest.raises(openai.NotFoundError):
        call(alice, "get", f"/caches/{cache['id']}")
    with pytest.raises(openai.NotFoundError):
        alice.completions.create(model=MODEL, prompt="A short-lived prefix. " * 11, max_tokens=2,
                                 extra_body={"cache_id": cache["id"]})


def test_shared_cache_serves_every_tenant_only_by_name(keyed: Server) -> None:
    root, bob = keyed.client("root"), keyed.client("bob")
    shared = call(root, "post", "/caches", {"model": MODEL, "messages": [
        {"role": "system", "content": "Shared public instructions for every tenant. " * 12}], "shared": True})
    messages = [{"role": "system", "content": "Shared public instructions for every tenant. " * 12}] + QUESTION
    unnamed = chat(bob, messages)  # automatic reuse never crosses tenants, shared prefixes included
    named = chat(bob, messages, cache_id=shared["id"])
    assert unnamed.usage.prompt_tokens_details.cached_tokens == 0
    assert named.usage.prompt_tokens_details.cached_tokens == shared["tokens"]
    assert named.choices[0].message.content == unnamed.choices[0].message.content
    assert shared["id"] in [c["id"] for c in call(bob, "get", "/caches")["data"]]
    with pytest.raises(openai.NotFoundError):  # usable by all, deletable by its owner only
        call(bob, "delete", f"/caches/{shared['id']}")


def test_session_turns_reuse_history_and_bill_retention(keyed: Server) -> None:
    alice, bob = keyed.client("alice"), keyed.client("bob")
    history = [{"role": "user", "content": "Name three colours."}]
    first = chat(alice, history, session_id="chat-1", session_ttl_seconds=30)
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "And three animals?"}]
    second = chat(alice, history, prompt_cache_key="chat-1")
    baseline = chat(bob, history)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens + first.usage.completion_tokens - 4
    assert second.usage.prompt_tokens - cached <= 20  # only the new message and the re-opened turn
    assert second.choices[0].message.content == baseline.choices[0].message.content
    rows = {e.id: e for e in keyed.runtime.meter.ledger.entries(tenant_of("alice"))}
    row = rows[first.id]
    retention = first.usage.model_extra["cost"]["session_retention"]  # type: ignore[index]
    kept = row.stored_token_seconds / 30
    assert kept == int(kept) and first.usage.prompt_tokens <= kept <= first.usage.prompt_tokens + 12
    assert retention == usd(Decimal(int(kept)) * 30 / 3600 * price(keyed, "session_retention") / M)


def test_expired_session_costs_a_recompute_not_a_wrong_answer(keyed: Server) -> None:
    carol = keyed.client("carol")
    history = [{"role": "user", "content": "Count from one to five."}]
    first = chat(carol, history, session_id="short", session_ttl_seconds=0.5)
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "Now backwards."}]
    time.sleep(1.0)
    chat(keyed.client("bob"), QUESTION)  # any step trims the live KV to --retain-cells (0 here)
    late = chat(carol, history, session_id="short")
    assert late.usage.prompt_tokens_details.cached_tokens == 0
    assert late.choices[0].message.content == chat(keyed.client("bob"), history).choices[0].message.content


def test_usage_and_prices_endpoints(keyed: Server) -> None:
    fresh = serve_usage = keyed.client("carol")
    before = httpx.get(f"{keyed.url}/v1/usage", headers={"authorization": "Bearer carol"}).json()
    a = chat(fresh, QUESTION)
    b = fresh.completions.create(model=MODEL, prompt="Bread is", max_tokens=5, temperature=0)
    after = call(serve_usage, "get", "/usage")
    assert after["object"] == "list" and after["data"][-1]["model"] == MODEL
    added = after["total"]["cost"] - before["total"]["cost"]
    expected = a.usage.model_extra["cost"]["total"] + b.usage.model_extra["cost"]["total"]  # type: ignore[index]
    assert added == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert after["total"]["requests"] == before["total"]["requests"] + 2
    bob_view = call(keyed.client("bob"), "get", "/usage")
    assert bob_view["total"]["prompt_tokens"] != after["total"]["prompt_tokens"]
    prices = call(fresh, "get", "/prices")
    book = prices["data"][MODEL]
    assert book["input"] == float(price(keyed, "input")) and book["cached_input"] == pytest.approx(book["input"] * 0.1)
    with pytest.raises(openai.AuthenticationError):
        call(keyed.client("mallory"), "get", "/usage")
