"""RAM and disk tiers without a model: LRU spill, promotion, expiry, restart, and every bad file."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from minimill.kv.tiers import StoredKV, TierLimits, TierStore


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(seed: int, size: int = 1000, ttl: float = 60.0, durable: bool = False) -> StoredKV:
    return StoredKV(tokens=tuple(range(seed, seed + 10)), data=bytes([seed % 256]) * size,
                    expires_at=1000.0 + ttl, durable=durable)


def store(path: Path | None, clock: Clock, ram: int = 10_000, disk: int = 1 << 20, fp: str = "m:f16") -> TierStore:
    return TierStore(fp, path, TierLimits(ram_bytes=ram, disk_bytes=disk), clock=clock)


def test_ram_hit_then_spill_to_disk_and_promotion(tmp_path: Path) -> None:
    clock = Clock()
    tiers = store(tmp_path, clock, ram=2_100)
    tiers.put("a", entry(1))
    tiers.put("b", entry(2))
    assert tiers.get("a") == (entry(1), "ram")  # a is now the most recent
    tiers.put("c", entry(3))  # over 2,100 bytes: b (least recent) moves to disk
    assert tiers.bytes_in("disk") > 1000 and tiers.counters.evictions["ram"] == 1
    got = tiers.get("b")
    assert got is not None and got[1] == "disk" and got[0].data == entry(2).data
    assert tiers.get("b") is not None and tiers.get("b")[1] == "ram"  # type: ignore[index]
    assert tiers.counters.hits == {"ram": 3, "disk": 1}


def test_ram_only_store_drops_what_does_not_fit() -> None:
    tiers = store(None, Clock(), ram=1_500)
    tiers.put("a", entry(1))
    tiers.put("b", entry(2))
    assert tiers.get("a") is None and tiers.get("b") is not None
    assert tiers.counters.misses == 1


def test_expiry_and_extend(tmp_path: Path) -> None:
    clock = Clock()
    tiers = store(tmp_path, clock)
    tiers.put("s", entry(1, ttl=10))
    tiers.put("c", entry(2, ttl=10, durable=True))
    tiers.extend("c", 1000.0 + 100)
    tiers.flush()
    clock.now += 50
    assert tiers.get("s") is None
    got = tiers.get("c")
    assert got is not None and got[0].expires_at == 1100.0
    reopened = store(tmp_path, clock)  # the extension reached the file too
    found = reopened.get("c")
    assert found is not None and found[0].expires_at == 1100.0


def test_durable_entries_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    first = store(tmp_path, clock)
    first.put("cache:1", entry(7, durable=True))
    first.close()
    reopened = store(tmp_path, clock)
    got = reopened.get("cache:1")
    assert got == (StoredKV(entry(7).tokens, entry(7).data, entry(7).expires_at, durable=True), "disk")
    assert reopened.get("cache:2") is None


def test_drop_removes_the_file(tmp_path: Path) -> None:
    tiers = store(tmp_path, Clock())
    tiers.put("x", entry(1, durable=True))
    tiers.flush()
    assert len(list(tmp_path.glob("*.kv"))) == 1
    tiers.drop("x")
    assert "x" not in tiers and not list(tmp_path.glob("*.kv"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "foreign", "garbage"])
def test_bad_files_are_dropped_never_loaded(tmp_path: Path, damage: str) -> None:
    clock = Clock()
    first = store(tmp_path, clock)
    first.put("cache:1", entry(5, durable=True))
    first.close()
    (path,) = tmp_path.glob("*.kv")
    raw = path.read_bytes()
    fingerprint = "m:f16"
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        path.write_bytes(raw[:200] + bytes([raw[200] ^ 1]) + raw[201:])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign":
        fingerprint = "other-model:q8_0"
    else:
        path.write_bytes(b"not a kv file at all" * 10)
    reopened = store(tmp_path, clock, fp=fingerprint)
    assert reopened.get("cache:1") is None
    assert reopened.counters.corrupt == 1 and not path.exists()


def test_disk_tier_is_bounded(tmp_path: Path) -> None:
    clock = Clock()
    tiers = store(tmp_path, clock, ram=0, disk=2_600)
    for i in range(4):
        tiers.put(f"k{i}", entry(i, durable=True))
    assert tiers.bytes_in("disk") <= 2_600
    assert tiers.counters.evictions["disk"] >= 2
    assert tiers.get("k3") is not None and tiers.get("k0") is None


class SlowDisk:
    """`write_atomically` that waits for `release` before writing: a disk the caller must never wait on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
        import minimill.kv.tiers as tiers_module

        self.release, self.started, self.fail = threading.Event(), threading.Event(), fail
        real = tiers_module.write_atomically

        def write(path: Path, data: bytes, sync: bool = True) -> None:
            self.started.set()
            assert self.release.wait(10)
            if self.fail:
                raise OSError(28, "No space left on device")
            real(path, data, sync)

        monkeypatch.setattr(tiers_module, "write_atomically", write)


def test_writes_never_block_the_caller_and_readers_see_pending_entries(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    disk = SlowDisk(monkeypatch)
    tiers = store(tmp_path, Clock(), ram=0)
    started = time.monotonic()
    tiers.put("cache:1", entry(3, durable=True))  # RAM holds nothing: the entry lives only in the pending write
    assert time.monotonic() - started < 1 and disk.started.wait(5)
    assert tiers.get("cache:1") == (entry(3, durable=True), "disk") and not list(tmp_path.glob("*.kv"))
    assert not tiers.flush(timeout=0.05)  # still waiting on the disk
    disk.release.set()
    assert tiers.flush(timeout=5)
    assert len(list(tmp_path.glob("*.kv"))) == 1
    tiers.close()
    reopened = store(tmp_path, Clock(), ram=0)
    assert reopened.get("cache:1") == (entry(3, durable=True), "disk")


def test_an_entry_dropped_while_its_file_is_written_leaves_no_file(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    disk = SlowDisk(monkeypatch)
    tiers = store(tmp_path, Clock())
    tiers.put("x", entry(1, durable=True))
    assert disk.started.wait(5)
    tiers.drop("x")
    disk.release.set()
    tiers.close()
    assert "x" not in tiers and not list(tmp_path.glob("*"))


def test_a_failing_disk_turns_the_tier_off_and_keeps_ram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    disk = SlowDisk(monkeypatch, fail=True)
    disk.release.set()
    tiers = store(tmp_path, Clock())
    tiers.put("a", entry(1, durable=True))
    tiers.put("b", entry(2, durable=True))
    assert tiers.flush(timeout=5)
    assert not tiers.disk_enabled and tiers.counters.write_errors >= 1 and tiers.bytes_in("disk") == 0
    assert tiers.get("a") == (entry(1, durable=True), "ram") and tiers.get("b") is not None
    assert sum("could not be written" in r.message for r in caplog.records) == 1
    tiers.close()


def test_a_warmed_entry_is_got_without_reading_its_file_and_a_later_write_wins(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    tiers = store(tmp_path, Clock(), ram=0)
    tiers.put("s", entry(1, durable=True))
    tiers.put("t", entry(2, durable=True))
    assert tiers.flush(timeout=5)
    tiers.warm("s")
    tiers.warm("t")
    reads: list[Path] = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or real(self))
    assert tiers.get("s") == (entry(1, durable=True), "disk") and not reads  # the step thread reads nothing
    tiers.put("t", entry(5, durable=True))  # rewritten after it was warmed: the staged copy is stale
    assert tiers.flush(timeout=5)
    assert tiers.get("t") == (entry(5, durable=True), "disk") and len(reads) == 1
    tiers.warm("missing")  # nothing to read: nothing staged, no error
    assert tiers.get("missing") is None
    tiers.close()


def test_landed_is_called_once_the_file_is_on_disk_or_never_will_be(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    TierStore("fp", None).put("r", entry(1, durable=True), lambda: calls.append("ram only"))
    assert calls == ["ram only"]  # nothing to write: at once
    disk = SlowDisk(monkeypatch)
    tiers = store(tmp_path, Clock())
    tiers.put("a", entry(1, durable=True), lambda: calls.append("a"))
    tiers.put("b", entry(2, durable=True), lambda: calls.append("b"))
    assert disk.started.wait(5) and calls == ["ram only"]  # answered only once it would survive a crash
    tiers.drop("b")  # it never will be written: its waiter is released
    assert calls == ["ram only", "b"]
    disk.release.set()
    assert tiers.flush(timeout=5) and calls == ["ram only", "b", "a"] and len(list(tmp_path.glob("*.kv"))) == 1
    disk.fail = True
    tiers.put("c", entry(3, durable=True), lambda: calls.append("c"))
    assert tiers.flush(timeout=5) and calls[-1] == "c" and not tiers.disk_enabled  # a failed disk releases it too
    tiers.close()


def test_two_stores_on_one_directory_read_what_the_other_wrote(tmp_path: Path) -> None:
    # Replicas share the disk tier: a cache one of them computed is loaded by the other, not recomputed.
    clock = Clock()
    first, second = store(tmp_path, clock), store(tmp_path, clock)
    assert second.tier_of("cache:x") is None and second.get("cache:x") is None
    first.put("cache:x", entry(7, durable=True))
    assert first.flush(5)
    assert second.tier_of("cache:x") == "disk"
    got = second.get("cache:x")
    assert got is not None and got[1] == "disk" and got[0].data == entry(7).data
    first.drop("cache:x")  # gone from the directory: the other still has its RAM copy, and no file
    assert not any(tmp_path.glob("*.kv"))
    third = store(tmp_path, clock)
    assert third.get("cache:x") is None and third.tier_of("cache:x") is None
    first.close()
    second.close()
    third.close()
