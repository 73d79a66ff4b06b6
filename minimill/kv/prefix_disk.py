"""Finished prefixes that fell out of RAM, kept on disk, so a chat resent after a long gap is still found.

The RAM store of finished prefixes (kv/retained.py) hands each entry that it evicts past its byte budget to
this store. The entry becomes one file in a TierStore of its own: its own directory and byte limit, so free
prefixes never push out paid caches and sessions. That store keeps files LRU, checks checksums, and writes
on its own writer thread. The entry's tokens are indexed by tenant in memory.

When a prompt shares at least MIN_TOKENS with an entry, and at least a quarter of it, the entry is read back
off the step thread and handed to the RAM store. The scheduler then finds it there like any saved prefix.
The file is dropped at that point; it is written again if the entry falls out of RAM again.

The index is not persisted: files left from before a restart are deleted when the store opens. Their
tokens are in their headers, but reading every header at start costs more than this cache is worth.

Thread-safe: entries arrive on the step thread, lookups come from the event loop, reads run on a worker
thread.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from minimill.kv.radix import RadixIndex
from minimill.kv.retained import MIN_TOKENS
from minimill.kv.tiers import StoredKV, TierLimits, TierStore

# A file's expiry, a formality: prefixes leave by the byte limit, least recently written first.
KEEP_SECONDS = 30 * 24 * 3600.0
# Entries wait in memory until the writer thread has written them: past this many bytes waiting, a new one is
# dropped rather than queued (a disk slower than the evictions must not grow the process).
MAX_PENDING_BYTES = 256 << 20


@dataclass(slots=True)
class PrefixDiskCounters:
    """Monotonic counters for metrics."""

    saved: int = 0
    hits: int = 0
    hit_tokens: int = 0
    dropped: int = 0  # not written: the writer was too far behind


@dataclass(frozen=True, slots=True)
class Recalled:
    """A prefix read back from disk: its namespace (tenant), tokens and KV bytes."""

    namespace: str
    tokens: tuple[int, ...]
    data: bytes


class PrefixDisk:
    """Finished prefixes on disk, indexed by tenant, LRU within `limit_bytes`."""

    def __init__(self, fingerprint: str, directory: Path, limit_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.kv"):  # from before a restart: no index knows them
            stale.unlink(missing_ok=True)
        # No fsyncs: the files are deleted at the next start anyway, so a crash loses nothing they could give.
        self.store = TierStore(fingerprint, directory, TierLimits(ram_bytes=0, disk_bytes=limit_bytes), sync=False)
        self.counters = PrefixDiskCounters()
        self._lock = threading.Lock()
        self._index = RadixIndex()
        self._keys = itertools.count(1)
        self._entries: OrderedDict[int, tuple[str, str]] = OrderedDict()  # key -> (name, namespace), oldest first
        self._by_name: dict[str, int] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def add(self, namespace: str, tokens: Sequence[int], data: bytes) -> None:
        """Keep a prefix evicted from RAM: queue its file (written by the store's thread) and index it."""
        tokens = tuple(tokens)
        name = f"prefix:{namespace}:{hashlib.sha256(repr(tokens).encode()).hexdigest()[:32]}"
        self._forget_evicted()  # so that a name whose file the store evicted is written again
        if self.store.pending_bytes() + len(data) > MAX_PENDING_BYTES:
            with self._lock:
                self.counters.dropped += 1
            return
        with self._lock:
            if name in self._by_name:
                return
            key = next(self._keys)
            self._entries[key] = (name, namespace)
            self._by_name[name] = key
            self._index.insert(namespace, key, tokens)
            self.counters.saved += 1
        self.store.put(name, StoredKV(tokens, data, time.time() + KEEP_SECONDS, durable=True))
        self._forget_evicted()

    def find(self, namespaces: Sequence[str], tokens: Sequence[int]) -> str | None:
        """The entry sharing the longest prefix with `tokens` in any of `namespaces`, if it is worth a read: at
        least MIN_TOKENS shared, and at least a quarter of the entry (a common system line is not worth reading
        a long chat's file)."""
        self._forget_evicted()  # the writer thread may have evicted files since the last add
        with self._lock:
            best: tuple[int, int] | None = None  # (key, shared)
            for namespace in namespaces:
                for key, shared in self._index.match(namespace, tokens).items():
                    length = len(self._index.tokens_of(key))
                    shared = min(shared, length)
                    if shared >= MIN_TOKENS and 4 * shared >= length and (best is None or shared > best[1]):
                        best = (key, shared)
            return self._entries[best[0]][0] if best is not None else None

    def take(self, name: str) -> Recalled | None:
        """Read `name` back and forget it here (the caller hands it to RAM); None if its file is gone or bad.
        A disk read: call it off the step thread."""
        found = self.store.get(name)
        self.store.drop(name)
        with self._lock:
            key = self._by_name.pop(name, None)
            if key is None:
                return None
            _, namespace = self._entries.pop(key)
            self._index.remove(key)
            if found is None:
                return None
            entry, _ = found
            self.counters.hits += 1
            self.counters.hit_tokens += len(entry.tokens)
            return Recalled(namespace, entry.tokens, entry.data)

    def bytes(self) -> int:
        """Bytes on disk (pending writes counted at their size)."""
        return self.store.bytes_in("disk")

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        self.store.close()

    def _forget_evicted(self) -> None:
        """Unindex the files the store evicted past its limit: always the oldest, as the store's LRU order is
        the order of `add` (an entry is read once, and dropped then)."""
        with self._lock:
            while self._entries:
                key, (name, _) = next(iter(self._entries.items()))
                if name in self.store:
                    return
                del self._entries[key]
                del self._by_name[name]
                self._index.remove(key)
