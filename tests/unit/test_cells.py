"""KVCells mirrors llama.cpp's unified cache: sharing, trimming, capacity; a random walk vs. a reference."""

from __future__ import annotations

import random

import pytest

from minimill.kv.cells import KVCells


def snapshot(cells: KVCells) -> tuple[int, int, list[int], dict[int, int]]:
    """Everything observable, to show that a failed call changed nothing."""
    seqs = sorted(cells.sequences())
    return cells.used, cells.free, seqs, {seq: cells.cells_freed_by_release(seq) for seq in seqs}


def test_fresh_cache() -> None:
    cells = KVCells(8)
    cells.check()
    assert (cells.used, cells.free, cells.capacity) == (0, 8, 8)
    assert cells.length(3) == 0 and cells.sequences() == []
    assert cells.cells_freed_by_release(3) == 0
    assert cells.release(3) == 0 and cells.truncate(3, 0) == 0
    assert repr(cells) == "KVCells(used=0, capacity=8, sequences=0)"


def test_negative_capacity_is_refused() -> None:
    with pytest.raises(ValueError):
        KVCells(-1)
    empty = KVCells(0)
    assert empty.can_append(0) and not empty.can_append(1)


def test_append_up_to_capacity() -> None:
    cells = KVCells(6)
    assert cells.can_append(6) and not cells.can_append(7) and not cells.can_append(-1)
    cells.append(1, 2)
    cells.append(2, 3)
    cells.append(1, 1)
    cells.check()
    assert (cells.used, cells.free) == (6, 0)
    assert (cells.length(1), cells.length(2)) == (3, 3)
    assert sorted(cells.sequences()) == [1, 2]
    assert cells.can_append(0) and not cells.can_append(1)
    cells.append(1, 0)
    assert cells.length(1) == 3


def test_append_zero_to_an_unknown_sequence_creates_nothing() -> None:
    cells = KVCells(4)
    cells.append(5, 0)
    cells.check()
    assert cells.sequences() == [] and cells.length(5) == 0


def test_capacity_errors_change_nothing() -> None:
    cells = KVCells(4)
    cells.append(1, 3)
    cells.copy_prefix(1, 2, 2)
    before = snapshot(cells)
    with pytest.raises(ValueError):
        cells.append(1, 2)
    with pytest.raises(ValueError):
        cells.append(3, 2)
    with pytest.raises(ValueError):
        cells.append(1, -1)
    assert snapshot(cells) == before
    assert (cells.length(1), cells.length(2), cells.length(3)) == (3, 2, 0)
    cells.check()
    cells.append(3, 1)  # exactly the last free cell still works
    assert cells.free == 0


def test_copy_prefix_errors_change_nothing() -> None:
    cells = KVCells(8)
    cells.append(1, 3)
    cells.append(2, 1)
    before = snapshot(cells)
    with pytest.raises(ValueError, match="not empty"):
        cells.copy_prefix(1, 2, 1)
    with pytest.raises(ValueError, match="cannot share 4"):
        cells.copy_prefix(1, 3, 4)
    with pytest.raises(ValueError):
        cells.copy_prefix(1, 3, -1)
    with pytest.raises(ValueError):
        cells.copy_prefix(9, 3, 1)
    assert snapshot(cells) == before and cells.length(3) == 0
    cells.check()


def test_copy_prefix_of_length_zero_leaves_dst_empty() -> None:
    cells = KVCells(8)
    cells.append(1, 3)
    cells.copy_prefix(1, 2, 0)
    cells.copy_prefix(9, 2, 0)
    cells.check()
    assert cells.length(2) == 0 and cells.sequences() == [1]


def test_copy_takes_no_cells_and_shared_cells_outlive_src() -> None:
    cells = KVCells(10)
    cells.append(1, 4)
    cells.copy_prefix(1, 2, 3)
    cells.check()
    assert (cells.used, cells.length(2)) == (4, 3)
    cells.append(2, 2)
    assert (cells.used, cells.free) == (6, 4)
    assert cells.cells_freed_by_release(1) == 1  # only position 3 is 1's alone
    assert cells.cells_freed_by_release(2) == 2  # its own two new positions
    assert cells.release(1) == 1
    cells.check()
    assert cells.used == 5 and cells.length(2) == 5 and cells.sequences() == [2]
    assert cells.cells_freed_by_release(2) == 5
    assert cells.release(2) == 5
    assert cells.used == 0
    cells.check()


def test_copy_into_a_sequence_emptied_by_truncate() -> None:
    cells = KVCells(8)
    cells.append(1, 2)
    cells.append(2, 3)
    assert cells.truncate(2, 0) == 3
    cells.copy_prefix(1, 2, 2)
    cells.check()
    assert (cells.used, cells.length(2)) == (2, 2)


def test_truncate_of_a_shared_prefix_frees_only_unshared_cells() -> None:
    cells = KVCells(10)
    cells.append(1, 5)
    cells.copy_prefix(1, 2, 5)
    assert cells.truncate(2, 2) == 0  # positions 2..4 are still 1's
    cells.check()
    assert (cells.used, cells.length(1), cells.length(2)) == (5, 5, 2)
    assert cells.cells_freed_by_release(1) == 3
    assert cells.truncate(1, 1) == 3  # 2..4 had no other holder; 1 is still 2's
    cells.check()
    assert (cells.used, cells.length(1)) == (2, 1)
    assert cells.cells_freed_by_release(2) == 1
    assert cells.release(2) == 1 and cells.release(1) == 1
    assert cells.used == 0


def test_truncate_beyond_the_end_changes_nothing_and_negative_is_refused() -> None:
    cells = KVCells(8)
    cells.append(1, 3)
    assert cells.truncate(1, 3) == 0 and cells.truncate(1, 10) == 0
    assert cells.length(1) == 3
    with pytest.raises(ValueError):
        cells.truncate(1, -1)
    assert cells.length(1) == 3 and cells.used == 3
    assert cells.truncate(1, 0) == 3
    assert cells.sequences() == [] and cells.length(1) == 0
    cells.check()


def test_release_frees_only_cells_no_one_else_holds_three_ways() -> None:
    cells = KVCells(20)
    cells.append(1, 6)
    cells.copy_prefix(1, 2, 4)
    cells.copy_prefix(2, 3, 2)
    cells.append(3, 1)
    cells.check()
    assert cells.used == 7
    assert [cells.cells_freed_by_release(seq) for seq in (1, 2, 3)] == [2, 0, 1]
    assert cells.used == 7  # asking changed nothing
    assert cells.release(2) == 0
    assert [cells.cells_freed_by_release(seq) for seq in (1, 3)] == [4, 1]
    assert cells.release(1) == 4
    assert (cells.used, cells.cells_freed_by_release(3)) == (3, 3)
    assert cells.release(3) == 3 and cells.used == 0
    cells.check()


def test_freed_cells_can_be_appended_again() -> None:
    cells = KVCells(3)
    cells.append(1, 3)
    assert not cells.can_append(1)
    cells.release(1)
    cells.append(2, 3)
    cells.check()
    assert (cells.used, cells.free) == (3, 0)


def test_check_catches_corruption() -> None:
    cells = KVCells(4)
    cells.append(1, 2)
    cells._refs[next(iter(cells._refs))] = 2
    with pytest.raises(AssertionError, match="reference counts"):
        cells.check()
    cells = KVCells(4)
    cells.append(1, 2)
    cells._cells[1].append(cells._cells[1][0])
    with pytest.raises(AssertionError, match="twice"):
        cells.check()
    cells = KVCells(1)
    cells.append(1, 1)
    cells._cells[2] = [99]
    cells._refs[99] = 1
    with pytest.raises(AssertionError, match="used of 1"):
        cells.check()


class Reference:
    """Brute force: each sequence's list of cell labels; a cell is used while any sequence lists it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.owners: dict[int, list[int]] = {}
        self.next_label = 0

    def used(self) -> int:
        return len({cell for cells in self.owners.values() for cell in cells})

    def alone(self, seq: int) -> int:
        others = {cell for other, cells in self.owners.items() if other != seq for cell in cells}
        return sum(1 for cell in self.owners.get(seq, []) if cell not in others)

    def append(self, seq: int, n: int) -> None:
        if n == 0:
            return
        labels = list(range(self.next_label, self.next_label + n))
        self.next_label += n
        self.owners.setdefault(seq, []).extend(labels)

    def truncate(self, seq: int, length: int) -> int:
        before = self.used()
        self.owners.setdefault(seq, [])[length:] = []
        if not self.owners[seq]:
            del self.owners[seq]
        return before - self.used()


def test_random_operations_match_reference() -> None:
    rng = random.Random(1234)
    capacity = 48
    cells, ref = KVCells(capacity), Reference(capacity)
    for _ in range(4000):
        seq = rng.randrange(6)
        op = rng.random()
        if op < 0.35:
            n = rng.randrange(0, 10)
            if n <= capacity - ref.used():
                assert cells.can_append(n)
                cells.append(seq, n)
                ref.append(seq, n)
            else:
                assert not cells.can_append(n)
                with pytest.raises(ValueError):
                    cells.append(seq, n)
        elif op < 0.55:
            dst = rng.randrange(6)
            length = rng.randrange(len(ref.owners.get(seq, [])) + 2)
            if ref.owners.get(dst) or length > len(ref.owners.get(seq, [])):
                with pytest.raises(ValueError):
                    cells.copy_prefix(seq, dst, length)
            else:
                cells.copy_prefix(seq, dst, length)
                if length:
                    ref.owners[dst] = ref.owners[seq][:length]
        elif op < 0.8:
            length = rng.randrange(cells.length(seq) + 2)
            assert cells.truncate(seq, length) == ref.truncate(seq, length)
        else:
            assert cells.release(seq) == ref.truncate(seq, 0)
        cells.check()
        assert cells.used == ref.used() and cells.used + cells.free == capacity
        assert sorted(cells.sequences()) == sorted(ref.owners)
        for other in range(6):
            assert cells.length(other) == len(ref.owners.get(other, []))
            assert cells.cells_freed_by_release(other) == ref.alone(other)
