"""RAM and disk tiers of serialised KV: one entry per name (a prompt cache or a chat session).

An entry is the token ids its KV covers, the bytes llama.cpp serialised for them, and an expiry.
RAM is an LRU dict bounded in bytes; what falls out of it moves to disk (one file per entry),
and a disk hit moves back up. Durable entries (prompt caches) are written to disk at once so they
survive a restart. Every file carries a header (model fingerprint, KV type, token ids, expiry) and a
SHA-256 over header and payload: a truncated, corrupted or foreign file is deleted and reported as
a miss, never loaded. No model and no llama.cpp in here: tokens and bytes only. Thread-safe.

Files are written by the store's own writer thread, never by the caller: a write is an fsync of the file
and one of its directory, and the caller is the engine's step thread, which must not wait on a disk. Until
its file is written an entry is served from the pending writes, so no reader can tell the difference.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import queue
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from minimill.durable import write_atomically

log = logging.getLogger(__name__)

Tier = Literal["ram", "disk"]
MAGIC = b"MMKV\x01"
_LENGTH = struct.Struct("<Q")
MAX_STAGED = 8  # entries `warm` holds for the step thread at once


@dataclass(frozen=True, slots=True)
class StoredKV:
    """The KV of `tokens` as llama.cpp serialised it, valid until `expires_at` (unix seconds)."""

    tokens: tuple[int, ...]
    data: bytes
    expires_at: float
    durable: bool = False

    @property
    def nbytes(self) -> int:
        """Bytes this entry takes in RAM."""
        return len(self.data) + 4 * len(self.tokens)


@dataclass(frozen=True, slots=True)
class TierLimits:
    """Capacity of each tier in bytes."""

    ram_bytes: int = 1 << 30
    disk_bytes: int = 16 << 30


@dataclass(slots=True)
class TierCounters:
    """Monotonic counters per tier, for metrics."""

    hits: dict[str, int] = field(default_factory=lambda: {"ram": 0, "disk": 0})
    misses: int = 0
    evictions: dict[str, int] = field(default_factory=lambda: {"ram": 0, "disk": 0})
    corrupt: int = 0
    write_errors: int = 0


def _file_name(name: str) -> str:
    # Names carry tenants and ids: hash them so a file name reveals nothing and is always safe.
    return hashlib.sha256(name.encode()).hexdigest()[:40] + ".kv"


def encode_file(fingerprint: str, name: str, entry: StoredKV) -> bytes:
    """File bytes: magic, header length, JSON header, payload, then SHA-256 of everything before it."""
    header = json.dumps({"fingerprint": fingerprint, "name": name, "tokens": list(entry.tokens),
                         "expires_at": entry.expires_at, "payload_bytes": len(entry.data)}).encode()
    body = MAGIC + _LENGTH.pack(len(header)) + header + entry.data
    return body + hashlib.sha256(body).digest()


def decode_file(raw: bytes, fingerprint: str, name: str) -> StoredKV | None:
    """The entry in `raw`, or None when it is truncated, corrupted, foreign or for another name."""
    if len(raw) < len(MAGIC) + _LENGTH.size + 32 or not raw.startswith(MAGIC):
        return None
    body, digest = raw[:-32], raw[-32:]
    if hashlib.sha256(body).digest() != digest:
        return None
    (length,) = _LENGTH.unpack_from(body, len(MAGIC))
    start = len(MAGIC) + _LENGTH.size
    try:
        header = json.loads(body[start:start + length])
        payload = body[start + length:]
        if (header["fingerprint"] != fingerprint or header["name"] != name
                or header["payload_bytes"] != len(payload)):
            return None
        return StoredKV(tokens=tuple(int(t) for t in header["tokens"]), data=payload,
                        expires_at=float(header["expires_at"]), durable=True)
    except (ValueError, KeyError, TypeError):
        return None


class TierStore:
    """Named KV entries in RAM (LRU, bounded) over a directory of files (LRU by access, bounded).

    `fingerprint` identifies the model file and KV type: files written under another one are
    rejected. `directory=None` keeps a RAM tier only. With a directory the store owns a writer thread:
    `flush` waits for the writes queued so far, `close` flushes and stops it.
    """

    def __init__(self, fingerprint: str, directory: Path | None, limits: TierLimits = TierLimits(),
                 clock: Callable[[], float] = time.time, sync: bool = True) -> None:
        self.fingerprint = fingerprint
        self._sync = sync  # fsync each file (off for a cache whose files a restart deletes anyway)
        self.directory = directory
        self.limits = limits
        self.counters = TierCounters()
        self._now = clock
        self._lock = threading.Lock()
        self._ram: OrderedDict[str, StoredKV] = OrderedDict()
        self._ram_bytes = 0
        self._disk: OrderedDict[str, int] = OrderedDict()  # file name -> size, least recent first
        self._disk_off = False
        # file name -> (version, name, entry) queued for the writer; readers are served from here until it lands
        self._pending: dict[str, tuple[int, str, StoredKV]] = {}
        self._versions = itertools.count()
        # Files read ahead by `warm` (off the engine's step thread), valid while no write or drop came between
        self._staged: OrderedDict[str, StoredKV] = OrderedDict()
        self._waiters: dict[str, list[tuple[int, Callable[[], None]]]] = {}  # file -> (version, `landed`)
        self._changes = 0
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._written = threading.Condition(self._lock)
        self._writer: threading.Thread | None = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            files = sorted(directory.glob("*.kv"), key=lambda p: p.stat().st_mtime)
            for path in files:
                self._disk[path.name] = path.stat().st_size
            for stale in directory.glob("*.tmp"):
                stale.unlink(missing_ok=True)  # a write that a crash interrupted
            self._writer = threading.Thread(target=self._write_files, name="kv-disk-writer", daemon=True)
            self._writer.start()

    # ---- queries ------------------------------------------------------------------------------
    def bytes_in(self, tier: Tier) -> int:
        """Bytes held in a tier."""
        with self._lock:
            return self._ram_bytes if tier == "ram" else sum(self._disk.values())

    def pending_bytes(self) -> int:
        """Bytes of entries queued for the writer thread and not yet on disk (held in memory until then)."""
        with self._lock:
            return sum(entry.nbytes for _, _, entry in self._pending.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.tier_of(name) is not None

    def tier_of(self, name: str) -> Tier | None:
        """The warmest tier holding `name` (without checking its file)."""
        with self._lock:
            if name in self._ram:
                return "ram"
            return "disk" if self._on_disk(_file_name(name)) else None

    # ---- operations ---------------------------------------------------------------------------
    def put(self, name: str, entry: StoredKV, landed: Callable[[], None] | None = None) -> None:
        """Store `entry` under `name` in RAM (and on disk at once if it is durable). `landed` is called once
        a durable entry's file is on disk, or will never be (the disk failed, the entry was dropped), from
        the writer thread; at once when there is nothing to write. Never blocks on the disk."""
        with self._lock:
            self._drop_ram(name)
            version = self._write(name, entry) if entry.durable else None
            if version is not None and landed is not None:
                self._waiters.setdefault(_file_name(name), []).append((version, landed))
            self._ram[name] = entry
            self._ram_bytes += entry.nbytes
            self._spill()
        if landed is not None and version is None:
            landed()

    def get(self, name: str) -> tuple[StoredKV, Tier] | None:
        """The live entry and the tier it came from; a disk hit moves up to RAM. None on a miss."""
        with self._lock:
            entry = self._ram.get(name)
            tier: Tier = "ram"
            if entry is None:
                entry = self._read(name)
                tier = "disk"
            if entry is None or entry.expires_at <= self._now():
                if entry is not None:
                    self._drop(name)
                self.counters.misses += 1
                return None
            self.counters.hits[tier] += 1
            if tier == "disk":
                self._ram[name] = entry
                self._ram_bytes += entry.nbytes
                self._spill(keep=name)
            self._ram.move_to_end(name)
            return entry, tier

    def take_lapsed(self, name: str) -> StoredKV | None:
        """`name`'s RAM entry if its expiry has passed, removed from every tier (its KV still holds its tokens:
        the caller may keep it as an ordinary prefix); None if it is live, elsewhere or unknown."""
        with self._lock:
            entry = self._ram.get(name)
            if entry is None or entry.expires_at > self._now():
                return None
            self._drop(name)
            return entry

    def warm(self, name: str) -> None:
        """Read and check `name`'s file now, on the caller's thread, so that the `get` that follows (on the
        engine's step thread) finds it in memory: disk reads and checksums stay off the step thread. Only a
        few entries are held so; a write or drop in between makes `get` read the file itself."""
        file = _file_name(name)
        with self._lock:
            if (self.directory is None or name in self._ram or not self._on_disk(file) or file in self._pending
                    or file in self._staged):
                return
            changes = self._changes
        try:
            raw = (self.directory / file).read_bytes()
            os.utime(self.directory / file)  # its place in the LRU order a restart reads back
        except OSError:
            return  # `get` meets the same problem and counts it
        entry = decode_file(raw, self.fingerprint, name)
        with self._lock:
            if entry is None or changes != self._changes:
                return
            self._staged[file] = entry
            while len(self._staged) > MAX_STAGED:
                self._staged.popitem(last=False)

    def extend(self, name: str, expires_at: float) -> None:
        """Move an entry's expiry (rewriting its file when it has one)."""
        with self._lock:
            entry = self._ram.get(name) or self._read(name)
            if entry is None:
                return
            updated = StoredKV(entry.tokens, entry.data, expires_at, entry.durable)
            if name in self._ram:
                self._ram[name] = updated
            if updated.durable or _file_name(name) in self._disk:
                self._write(name, updated)

    def drop(self, name: str) -> None:
        """Forget `name` in every tier."""
        with self._lock:
            self._drop(name)

    def expire(self) -> int:
        """Drop expired RAM entries (disk entries are checked when read); returns how many."""
        with self._lock:
            now = self._now()
            dead = [name for name, entry in self._ram.items() if entry.expires_at <= now]
            for name in dead:
                self._drop(name)
            return len(dead)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every write queued so far is on disk (or given up on); False if `timeout` passed first."""
        with self._written:
            return self._written.wait_for(lambda: not self._pending, timeout)

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        if self._writer is not None:
            self.flush()
            self._queue.put(None)
            self._writer.join()
            self._writer = None

    # ---- the writer thread ----------------------------------------------------------------------
    def _write_files(self) -> None:
        while (file := self._queue.get()) is not None:
            with self._lock:
                job = self._pending.get(file)
            if job is None:
                continue  # written already (one queue item per put, the latest version each time), or dropped
            version, name, entry = job
            assert self.directory is not None
            raw = encode_file(self.fingerprint, name, entry)
            try:
                write_atomically(self.directory / file, raw, self._sync)  # a reader sees the old file or the new
                error = None
            except OSError as exc:
                error = exc
            with self._written:
                self._landed(file, version, len(raw), error)
                self._written.notify_all()

    def _landed(self, file: str, version: int, size: int, error: OSError | None) -> None:
        """Account for one finished write (lock held)."""
        current = self._pending.get(file)
        mine = current is not None and current[0] == version
        if error is not None:
            # A full or failing disk must not fail requests: keep RAM only and say so, once.
            self.counters.write_errors += 1
            if not self._disk_off:
                log.warning("the disk tier in %s could not be written (%s); it is off until restart, KV stays in "
                            "RAM", self.directory, error)
            self._disk_off = True
            for lost in list(self._pending):  # nothing more is written: what waits is given up
                self._pending.pop(lost)
                self._disk.pop(lost, None)
            for waited in list(self._waiters):
                self._notify(waited)
            return
        self._notify(file, version)
        if mine:
            del self._pending[file]
            if file in self._disk:
                self._disk[file] = size
                self._evict_disk()
        elif file not in self._disk and self.directory is not None:
            (self.directory / file).unlink(missing_ok=True)  # dropped while it was being written

    # ---- internals (lock held) ----------------------------------------------------------------
    def _drop(self, name: str) -> None:
        self._drop_ram(name)
        file = _file_name(name)
        self._forget(file)
        if file in self._disk and self.directory is not None:
            del self._disk[file]
            (self.directory / file).unlink(missing_ok=True)

    def _drop_ram(self, name: str) -> None:
        old = self._ram.pop(name, None)
        if old is not None:
            self._ram_bytes -= old.nbytes

    def _spill(self, keep: str | None = None) -> None:
        """Move least recently used RAM entries to disk until RAM fits its limit."""
        while self._ram_bytes > self.limits.ram_bytes and len(self._ram) > (1 if keep else 0):
            name = next(n for n in self._ram if n != keep)
            entry = self._ram[name]
            self._drop_ram(name)
            self.counters.evictions["ram"] += 1
            if self.directory is not None and entry.expires_at > self._now() and (
                    _file_name(name) not in self._disk):
                self._write(name, entry)

    @property
    def disk_enabled(self) -> bool:
        """Whether entries are still written to disk (a failed write, such as a full disk, turns it off)."""
        return self.directory is not None and not self._disk_off

    def _write(self, name: str, entry: StoredKV) -> int | None:
        """Queue `entry`'s file for the writer thread; its write's version (None if there is no disk tier).
        Counted at its RAM size until it is written."""
        if self.directory is None or self._disk_off:
            return None
        file = _file_name(name)
        self._unstage(file)
        version = next(self._versions)
        self._pending[file] = (version, name, entry)
        self._disk.pop(file, None)
        self._disk[file] = entry.nbytes
        self._evict_disk()
        self._queue.put(file)
        return version

    def _unstage(self, file: str) -> None:
        """`file` changes: what `warm` read of it, or is reading, is stale."""
        self._changes += 1
        self._staged.pop(file, None)

    def _forget(self, file: str) -> None:
        """`file` goes (dropped or evicted): stale, not to be written, and its waiters released."""
        self._unstage(file)
        self._pending.pop(file, None)
        self._notify(file)

    def _notify(self, file: str, version: int | None = None) -> None:
        """Call the `landed` callbacks of `file` up to `version` (all of them when None)."""
        waiting = self._waiters.pop(file, [])
        later = [(v, callback) for v, callback in waiting if version is not None and v > version]
        if later:
            self._waiters[file] = later
        for v, callback in waiting:
            if version is None or v <= version:
                callback()

    def _evict_disk(self) -> None:
        assert self.directory is not None
        while sum(self._disk.values()) > self.limits.disk_bytes and len(self._disk) > 1:
            victim = next(iter(self._disk))
            del self._disk[victim]
            self._forget(victim)
            (self.directory / victim).unlink(missing_ok=True)
            self.counters.evictions["disk"] += 1

    def _on_disk(self, file: str) -> bool:
        """Whether `file` is in the directory: known, or written since by another process sharing it (replicas
        on one disk tier load each other's caches instead of recomputing them)."""
        if file in self._disk:
            return True
        if self.directory is None or self._disk_off:
            return False
        try:
            self._disk[file] = (self.directory / file).stat().st_size
        except OSError:
            return False
        return True

    def _read(self, name: str) -> StoredKV | None:
        file = _file_name(name)
        if self.directory is None or not self._on_disk(file):
            return None
        if (waiting := self._pending.get(file)) is not None:
            self._disk.move_to_end(file)
            return waiting[2]
        path = self.directory / file
        if (staged := self._staged.pop(file, None)) is not None:
            self._disk.move_to_end(file)
            return staged
        try:
            raw = path.read_bytes()
        except OSError:
            raw = b""
        entry = decode_file(raw, self.fingerprint, name)
        if entry is None:
            # Truncated, corrupted, or written for another model or KV type: never load it.
            self.counters.corrupt += 1
            del self._disk[file]
            path.unlink(missing_ok=True)
            return None
        self._disk.move_to_end(file)
        os.utime(path)
        return entry
