"""The disk below RAM for finished prefixes: indexed per tenant, read back once, bounded, checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from minimill.kv import prefix_disk
from minimill.kv.prefix_disk import PrefixDisk
from minimill.kv.retained import RetainedRam


def tokens(start: int, count: int = 40) -> tuple[int, ...]:
    return tuple(range(start, start + count))


def test_a_prefix_is_found_by_its_tenant_read_back_once_and_forgotten(tmp_path: Path) -> None:
    disk = PrefixDisk("fp", tmp_path, limit_bytes=1 << 20)
    try:
        disk.add("alice", tokens(0), b"kv-a")
        disk.add("alice", tokens(0), b"kv-a")  # the same prefix again: one entry
        assert len(disk) == 1 and disk.counters.saved == 1
        prompt = tokens(0) + (7, 8, 9)
        assert disk.find(["bob"], prompt) is None  # another tenant's history is never matched
        assert disk.find(["alice"], tokens(0, 31)) is None  # shares fewer than 32 tokens: not worth a read
        disk.add("alice", tokens(5000, 200), b"long")
        assert disk.find(["alice"], tokens(5000, 45) + (1,)) is None  # 45 of a 200-token file: not worth it
        assert disk.find(["alice"], tokens(5000, 50) + (1,)) is not None  # a quarter of it
        name = disk.find(["bob", "alice"], prompt)
        assert name is not None
        disk.store.flush()
        recalled = disk.take(name)
        assert recalled is not None and (recalled.namespace, recalled.tokens, recalled.data) == ("alice", tokens(0),
                                                                                                 b"kv-a")
        assert disk.counters.hits == 1 and disk.counters.hit_tokens == 40
        assert len(disk) == 1 and disk.find(["alice"], prompt) is None and len(list(tmp_path.glob("*.kv"))) == 1
        assert disk.take(name) is None
    finally:
        disk.close()


def test_past_its_limit_the_oldest_leave_the_disk_and_the_index(tmp_path: Path) -> None:
    disk = PrefixDisk("fp", tmp_path, limit_bytes=3 * 1000)
    try:
        for i in range(6):
            disk.add("t", tokens(i * 100), bytes(800))
        disk.store.flush()
        assert disk.find(["t"], tokens(0)) is None  # the first ones went (files written, then over the limit)...
        assert disk.bytes() <= 3000 and len(list(tmp_path.glob("*.kv"))) == len(disk) < 6  # ...and their index
        name = disk.find(["t"], tokens(500))
        assert name is not None and disk.take(name) is not None
    finally:
        disk.close()


def test_a_corrupted_file_is_a_miss_and_files_from_before_a_restart_are_deleted(tmp_path: Path) -> None:
    disk = PrefixDisk("fp", tmp_path, limit_bytes=1 << 20)
    try:
        disk.add("t", tokens(0), b"x" * 100)
        disk.add("t", tokens(1000), b"y" * 100)
        disk.store.flush()
        first = disk.find(["t"], tokens(0))
        assert first is not None
        for path in tmp_path.glob("*.kv"):
            raw = bytearray(path.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            path.write_bytes(bytes(raw))
        assert disk.take(first) is None and disk.store.counters.corrupt == 1
    finally:
        disk.close()
    assert list(tmp_path.glob("*.kv"))  # the second file is still there...
    reopened = PrefixDisk("fp", tmp_path, limit_bytes=1 << 20)
    try:
        assert not list(tmp_path.glob("*.kv")) and reopened.find(["t"], tokens(1000)) is None  # ...until a restart
    finally:
        reopened.close()


def test_ram_hands_what_falls_out_past_its_limit_to_the_disk(tmp_path: Path) -> None:
    disk = PrefixDisk("fp", tmp_path, limit_bytes=1 << 20)
    ram = RetainedRam(250, evicted=disk.add)
    try:
        for i in range(3):
            ram.fill(ram.reserve("t", tokens(i * 100)), bytes(100))
        assert len(ram) == 2 and ram.counters.evicted == 1
        name = disk.find(["t"], tokens(0) + (1,))
        assert name is not None and len(disk) == 1
        recalled = disk.take(name)
        assert recalled is not None
        ram.adopt(recalled.namespace, recalled.tokens, recalled.data)  # back up: the least recent of RAM goes down
        assert ram.best(["t"], tokens(0)) is not None and disk.find(["t"], tokens(100)) is not None
        ram.clear()  # a KV reset drops RAM without writing it down
        assert len(disk) == 1
    finally:
        disk.close()


def test_an_entry_is_dropped_rather_than_queued_past_the_bytes_waiting_for_the_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefix_disk, "MAX_PENDING_BYTES", 1000)
    disk = PrefixDisk("fp", tmp_path, limit_bytes=1 << 20)
    try:
        disk.add("t", tokens(0), bytes(2000))  # more than may wait in memory at once: never queued
        assert disk.counters.dropped == 1 and disk.counters.saved == 0 and len(disk) == 0
        disk.add("t", tokens(100), bytes(500))
        disk.store.flush()
        assert disk.counters.saved == 1 and disk.find(["t"], tokens(100)) is not None
    finally:
        disk.close()
