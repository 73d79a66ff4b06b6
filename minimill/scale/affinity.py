"""Which replica a request should go to: the one holding its session or cache, else the one that served the
longest prefix of its prompt for the same tenant, balanced against load. Pure: no Ray, no HTTP.

A request's routing keys are read from its JSON body before it reaches any replica (so the router needs no
tokenizer): its tenant (a digest of its bearer key), its session (`session_id` or `prompt_cache_key`), the
cache it names (`cache_id`), and chained digests of its prompt text in blocks of `BLOCK_CHARS` characters,
salted by tenant, as SGLang's router and Ray Serve LLM's prefix router match on text. Replicas remember the
keys of what they served (`Holdings`, bounded LRU) and publish them; the router adds what it has just sent
itself, so the next turn of a chat finds its replica before the replica's next report.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BLOCK_CHARS = 64  # prompt text per digest: fine enough for a 55-token row after a long instruction
MAX_BLOCKS = 512  # a prompt's first 32K characters are matched; past them a match is as good as certain
# A replica is preferred for what it holds unless it has this many more requests in flight than the least
# loaded one: past it the request goes where it waits less, and recomputes (as Ray Serve LLM's prefix router
# falls back to power-of-two choices when queues are imbalanced).
IMBALANCE = 8
MIN_MATCH = 0.1  # a prefix match below this fraction of the prompt counts as none


@dataclass(frozen=True, slots=True)
class RoutingKeys:
    """What a request can be routed by. Empty for requests that hold no KV (files, batches, listings)."""

    tenant: str = ""
    session: str | None = None
    cache_id: str | None = None
    blocks: tuple[int, ...] = ()
    seed: str = ""  # a digest of the prompt's beginning ("" without a prompt): where equal loads send it


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # JSON may carry a lone surrogate: still text to hash, never an error


def _digest(*parts: str) -> str:
    return hashlib.blake2b(_bytes("\0".join(parts)), digest_size=8).hexdigest()


def tenant_of(headers: Mapping[str, str]) -> str:
    """A digest of the bearer key (the tenant the replica will authenticate), "" without one."""
    auth = headers.get("authorization", "")
    return _digest("tenant", auth.removeprefix("Bearer ").strip()) if auth else ""


def _text(value: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else _text(part) for part in value)
    return ""


def prompt_text(body: Mapping[str, Any]) -> str:
    """The prompt of a chat or completion body as one string (roles kept, so turns do not run together);
    "" when the body has none."""
    messages = body.get("messages")
    if isinstance(messages, list):
        return "".join(f"\x1e{m.get('role', '')}\x1f{_text(m.get('content'))}" for m in messages
                       if isinstance(m, dict))
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt and isinstance(prompt[0], str) else json.dumps(prompt[:MAX_BLOCKS * 16])
    return prompt if isinstance(prompt, str) else ""


def block_digests(tenant: str, text: str) -> tuple[int, ...]:
    """Chained digests of `text`'s whole blocks: the i-th names the first i+1 blocks, salted by tenant (so one
    tenant's prompt never matches another's)."""
    digests = []
    chain = hashlib.blake2b(_bytes(tenant), digest_size=8)
    for start in range(0, min(len(text), BLOCK_CHARS * MAX_BLOCKS) - BLOCK_CHARS + 1, BLOCK_CHARS):
        chain.update(_bytes(text[start:start + BLOCK_CHARS]))
        digests.append(int.from_bytes(chain.copy().digest(), "big"))
    return tuple(digests)


def keys_for(path: str, headers: Mapping[str, str], body: bytes) -> RoutingKeys:
    """The routing keys of an HTTP request (lower-case `headers`); a body that is not a JSON object gives the
    tenant alone (the replica answers it, usually with a 400)."""
    tenant = tenant_of(headers)
    if not body or not path.startswith("/v1/"):
        return RoutingKeys(tenant)
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return RoutingKeys(tenant)
    if not isinstance(parsed, dict):
        return RoutingKeys(tenant)
    session = parsed.get("session_id") or parsed.get("prompt_cache_key")
    cache_id = parsed.get("cache_id")
    text = prompt_text(parsed)
    return RoutingKeys(tenant=tenant,
                       session=_digest(tenant, session) if isinstance(session, str) else None,
                       cache_id=cache_id if isinstance(cache_id, str) else None,
                       blocks=block_digests(tenant, text),
                       seed=_digest(tenant, text[:BLOCK_CHARS]) if text else "")


class Holdings:
    """What one replica served lately, as the keys the router matches: sessions, caches and prompt block
    digests, each an LRU bounded by `limit` entries (an approximation of what its KV holds, as SGLang's
    router keeps an approximate tree per worker)."""

    def __init__(self, limit: int = 16384) -> None:
        self.limit = limit
        self._sessions: OrderedDict[str, None] = OrderedDict()
        self._caches: OrderedDict[str, None] = OrderedDict()
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def _touch(self, lru: OrderedDict[Any, None], keys: Iterable[Any]) -> None:
        for key in keys:
            lru[key] = None
            lru.move_to_end(key)
        while len(lru) > self.limit:
            lru.popitem(last=False)

    def add(self, keys: RoutingKeys) -> None:
        """Remember a request's keys as held here."""
        self._touch(self._sessions, [keys.session] if keys.session else [])
        self._touch(self._caches, [keys.cache_id] if keys.cache_id else [])
        self._touch(self._blocks, keys.blocks)

    def add_cache(self, cache_id: str) -> None:
        """Remember a cache created here."""
        self._touch(self._caches, [cache_id])

    def summary(self) -> dict[str, list[Any]]:
        """What the replica publishes (Ray Serve's routing stats): plain lists, cheap to pickle."""
        return {"sessions": list(self._sessions), "caches": list(self._caches), "blocks": list(self._blocks)}

    def merge(self, summary: Mapping[str, Any]) -> None:
        """Add a published summary (the router's view of a replica: its report and what was sent since)."""
        self._touch(self._sessions, summary.get("sessions", ()))
        self._touch(self._caches, summary.get("caches", ()))
        self._touch(self._blocks, summary.get("blocks", ()))

    @property
    def blocks_held(self) -> int:
        """How many prompt blocks this replica holds (a measure of the KV memory it has given to prefixes)."""
        return len(self._blocks)

    def holds(self, keys: RoutingKeys) -> bool:
        """Whether the request's session or cache was served here."""
        return (keys.session is not None and keys.session in self._sessions) or (
            keys.cache_id is not None and keys.cache_id in self._caches)

    def matched(self, blocks: Sequence[int]) -> int:
        """How many leading blocks of a prompt were served here (the chain makes a later block imply the earlier
        ones, so this halves to the longest present)."""
        low, high = 0, len(blocks)
        while low < high:
            middle = (low + high + 1) // 2
            if blocks[middle - 1] in self._blocks:
                low = middle
            else:
                high = middle - 1
        return low


class InFlight:
    """Requests a router sent and has not seen finish, counted per replica. A request counts from the moment it
    is chosen (so requests routed together spread), moves if it was sent elsewhere, and stops counting when it
    finishes, or after `unconfirmed_seconds` if it was chosen but never sent. Ray reports where a request went
    and that it finished from different callbacks in no fixed order (a short answer can finish first), so a
    finished request is remembered (the last `remember` of them) and never counted again."""

    def __init__(self, unconfirmed_seconds: float = 60.0, remember: int = 4096) -> None:
        self.unconfirmed_seconds = unconfirmed_seconds
        self.remember = remember
        self._where: dict[str, tuple[str, bool, float]] = {}  # request -> (replica, sent there, chosen at)
        self._per_replica: Counter[str] = Counter()
        self._finished: OrderedDict[str, None] = OrderedDict()

    def on(self, replica: str) -> int:
        """How many of this router's requests are in flight on `replica`."""
        return self._per_replica[replica]

    def where(self, request: str) -> str | None:
        """The replica `request` counts on (None once finished, or before it was chosen)."""
        counted = self._where.get(request)
        return counted[0] if counted else None

    def _place(self, request: str, replica: str, sent: bool, now: float) -> None:
        if request in self._finished:
            return
        self._drop(request)
        self._where[request] = (replica, sent, now)
        self._per_replica[replica] += 1

    def _drop(self, request: str) -> None:
        counted = self._where.pop(request, None)
        if counted is not None:
            self._per_replica[counted[0]] -= 1
            if self._per_replica[counted[0]] <= 0:
                del self._per_replica[counted[0]]

    def chosen(self, request: str, replica: str, now: float) -> None:
        """The router picked `replica` for `request` (not yet sent)."""
        self._place(request, replica, False, now)

    def sent(self, request: str, replica: str, now: float) -> None:
        """Ray sent `request` to `replica` (the choice, or another replica if the choice refused it)."""
        self._place(request, replica, True, now)

    def finished(self, request: str) -> None:
        """`request` left its replica (answered, failed or cancelled)."""
        self._drop(request)
        self._finished[request] = None
        while len(self._finished) > self.remember:
            self._finished.popitem(last=False)

    def reported(self, replica: str, ongoing: int, now: float, grace: float = 1.0) -> None:
        """`replica` says it has `ongoing` requests (from every router). Sent requests counted there beyond that,
        oldest first, have finished unseen: stop counting them, so a lost completion cannot leave a replica
        counted busy forever. Those sent in the last `grace` seconds may not have arrived yet, and stay."""
        mine = sorted((at, request) for request, (where, sent, at) in self._where.items()
                      if where == replica and sent and at < now - grace)
        for _, request in mine[:max(0, len(mine) - ongoing)]:
            self._drop(request)

    def expire(self, now: float) -> None:
        """Stop counting requests chosen more than `unconfirmed_seconds` ago and never sent (cancelled while
        they waited)."""
        stale = now - self.unconfirmed_seconds
        for request in [r for r, (_, sent, at) in self._where.items() if not sent and at < stale]:
            self._drop(request)

    def forget(self, replica: str) -> None:
        """A replica died: its requests no longer count anywhere."""
        for request in [r for r, (where, _, _) in self._where.items() if where == replica]:
            self._drop(request)


@dataclass(slots=True)
class ReplicaView:
    """The router's view of one replica: its id, requests in flight through this router, and its holdings."""

    id: str
    in_flight: int = 0
    holdings: Holdings = field(default_factory=Holdings)


@dataclass(frozen=True, slots=True)
class Choice:
    """Replica ids best first, and why the first was chosen (for logs, metrics and tests)."""

    ranked: tuple[str, ...]
    reason: str


def choose(keys: RoutingKeys, replicas: Sequence[ReplicaView], imbalance: int = IMBALANCE) -> Choice:
    """Rank `replicas` for a request: the holder of its session or cache; else the longest prefix match (at
    least MIN_MATCH of its blocks); else, for a new prefix, the replica holding the fewest blocks (within one
    prompt's worth), as SGLang's router sends a miss to its smallest tree, so prefixes fill the replicas' memory
    evenly; else the least loaded. A replica loaded `imbalance` more than the least loaded one is passed over.
    Ties go to the least loaded, then to the replica the prompt's beginning hashes to."""
    if not replicas:
        return Choice((), "none")
    least = min(r.in_flight for r in replicas)
    # Equal loads are ordered by a hash of the replica with the prompt's beginning (rendezvous hashing): new
    # prefixes spread evenly, and two requests with one new prefix (or one short prompt) arriving together still
    # meet. A request without a prompt goes anywhere.
    seed = keys.seed or str(random.random())
    by_load = sorted(replicas, key=lambda r: (r.in_flight, _digest(seed, r.id)))
    eligible = [r for r in by_load if r.in_flight <= least + imbalance]

    def ranked(first: ReplicaView, reason: str) -> Choice:
        return Choice((first.id, *(r.id for r in by_load if r.id != first.id)), reason)

    if keys.session is not None or keys.cache_id is not None:
        owner = next((r for r in eligible if r.holdings.holds(keys)), None)
        if owner is not None:
            return ranked(owner, "session" if keys.session is not None else "cache")
    if keys.blocks:
        best, matched = max(((r, r.holdings.matched(keys.blocks)) for r in eligible), key=lambda item: item[1])
        if matched >= max(1, MIN_MATCH * len(keys.blocks)):
            return ranked(best, "prefix")
        # A new prefix: its KV will stay where it goes. Where it goes by load alone, the replicas' shares of the
        # prefixes follow the timing of the arrivals, and the one with more than its memory holds recomputes.
        room = min(r.holdings.blocks_held for r in eligible)
        emptiest = next(r for r in eligible if r.holdings.blocks_held < room + len(keys.blocks))
        return ranked(emptiest, "room")
    return ranked(by_load[0], "load")
