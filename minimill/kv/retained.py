"""Finished prefixes kept in RAM once they leave the live KV, so a plain client's resent history is found again.

A retained sequence the scheduler evicts from the live context is saved here instead of dropped (when it is
long enough to be worth a load): its tokens indexed by tenant in a radix tree, its serialised KV held as
bytes, least recently used first out past a byte limit. A later prompt that shares a longer prefix with an
entry than with anything live gets the entry loaded back into a slot and copies from it, as from any live
prefix. Entries are reserved when the eviction is planned and filled when the step's runner has saved the
bytes (a step that fails drops its reservations). Pure Python: no llama.cpp, owned by the scheduler's thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from minimill.kv.radix import RadixIndex

# Below this many tokens a prefix is cheaper to recompute than to save, hold and load.
MIN_TOKENS = 32


@dataclass(slots=True, eq=False)
class RetainedEntry:
    """One saved prefix: its namespace (tenant), tokens, and KV bytes (None until the runner saved them)."""

    namespace: str
    tokens: tuple[int, ...]
    data: bytes | None = None


@dataclass(slots=True)
class RetainedCounters:
    """Monotonic counters for metrics."""

    saved: int = 0
    saved_bytes: int = 0
    hits: int = 0
    hit_tokens: int = 0
    evicted: int = 0


class RetainedRam:
    """Saved prefixes by key (negative ints, never a slot), LRU within `limit_bytes`. `evicted`, when given,
    receives each entry that falls out past the limit (namespace, tokens, bytes): the disk below RAM."""

    def __init__(self, limit_bytes: int,
                 evicted: Callable[[str, tuple[int, ...], bytes], None] | None = None) -> None:
        self.limit_bytes = limit_bytes
        self._evicted = evicted
        self.counters = RetainedCounters()
        self.index = RadixIndex()
        self._entries: OrderedDict[int, RetainedEntry] = OrderedDict()  # least recently used first
        self._next_key = -2  # -1 is the holder key of loaded prefixes
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def wants(self, tokens: int) -> bool:
        """Whether a prefix of `tokens` tokens is worth saving here."""
        return self.limit_bytes > 0 and tokens >= MIN_TOKENS

    def reserve(self, namespace: str, tokens: Sequence[int]) -> int:
        """A key for a prefix about to be saved; it is indexed (and matched) only once `fill` gives its bytes."""
        key = self._next_key
        self._next_key -= 1
        self._entries[key] = RetainedEntry(namespace, tuple(tokens))
        return key

    def fill(self, key: int, data: bytes) -> None:
        """The runner saved `key`'s KV: index it, then evict the least recently used past the limit."""
        entry = self._entries.get(key)
        if entry is None:
            return
        # One entry that is a prefix of another adds nothing: only the longer is kept.
        matches = self.index.match(entry.namespace, entry.tokens)
        if any(shared == len(entry.tokens) for shared in matches.values()):
            del self._entries[key]
            return
        for other, shared in matches.items():
            if shared == len(self._entries[other].tokens):
                self._remove(other)
        entry.data = data
        self.bytes += len(data)
        self.counters.saved += 1
        self.counters.saved_bytes += len(data)
        self.index.insert(entry.namespace, key, entry.tokens)
        self.trim(self.limit_bytes)

    def resize(self, limit_bytes: int) -> None:
        """Hold at most `limit_bytes` from now on (what the RAM budget leaves after pinned KV)."""
        self.limit_bytes = max(0, limit_bytes)
        self.trim(self.limit_bytes)

    def adopt(self, namespace: str, tokens: Sequence[int], data: bytes) -> None:
        """Hold a prefix saved elsewhere (a session or cache past its TTL, from the tier store)."""
        if self.wants(len(tokens)):
            self.fill(self.reserve(namespace, tokens), data)

    def discard(self, key: int) -> None:
        """Forget a reservation whose bytes were never saved (the step failed), or an entry."""
        if key in self._entries:
            self._remove(key)

    def best(self, namespaces: Sequence[str], tokens: Sequence[int]) -> tuple[int, int] | None:
        """The saved entry sharing the longest prefix with `tokens` in any of `namespaces`: (key, shared)."""
        found: tuple[int, int] | None = None
        for namespace in namespaces:
            for key, shared in self.index.match(namespace, tokens).items():
                shared = min(shared, len(self._entries[key].tokens))
                if found is None or shared > found[1]:
                    found = (key, shared)
        return found

    def take(self, key: int, used: int) -> RetainedEntry:
        """Remove `key` to load it back into the live KV (`used` of its tokens are reused); it returns here
        when evicted again."""
        entry = self._entries[key]
        self._remove(key)
        self.counters.hits += 1
        self.counters.hit_tokens += used
        return entry

    def trim(self, limit_bytes: int) -> None:
        """Evict least recently used entries until at most `limit_bytes` are held."""
        while self.bytes > max(0, limit_bytes):
            key = next((k for k, e in self._entries.items() if e.data is not None), None)
            if key is None:
                return
            entry = self._entries[key]
            self._remove(key)
            self.counters.evicted += 1
            if self._evicted is not None and entry.data is not None:
                self._evicted(entry.namespace, entry.tokens, entry.data)

    def clear(self) -> None:
        """Drop everything (the live KV was reset: nothing here can be trusted to match it)."""
        for key in list(self._entries):
            self._remove(key)

    def _remove(self, key: int) -> None:
        entry = self._entries.pop(key)
        if entry.data is not None:
            self.bytes -= len(entry.data)
            self.index.remove(key)
