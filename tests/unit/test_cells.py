"""KVCells mirrors llama.cpp's unified cache: sharing, trimming, capacity, against a reference."""

from __future__ import annotations

import random

import pytest

from minimill.kv.cells import KVCells


def test_copy_shares_cells_until_the_last_holder_goes() -> None:
    cells = KVCells(10)
    cells.append(1, 4)
    cells.copy_prefix(1, 2, 3)
    cells.append(2, 2)
    assert (cells.used, cells.free) == (6, 4)
    assert cells.cells_freed_by_release(1) == 1  # only position 3 is 1's alone
    assert cells.release(1) == 1
    assert cells.used == 5 and cells.length(2) == 5
    assert cells.truncate(2, 1) == 4
    cells.check()


def test_capacity_errors_change_nothing() -> None:
    cells = KVCells(4)
    cells.append(1, 3)
    with pytest.raises(ValueError):
        cells.append(1, 2)
    with pytest.raises(ValueError):
        cells.copy_prefix(1, 2, 4)
    assert cells.used == 3 and cells.length(1) == 3 and cells.length(2) == 0
    cells.check()


def test_random_operations_match_reference() -> None:
    rng = random.Random(99)
    cells = KVCells(64)
    owners: dict[int, list[int]] = {}  # reference: seq -> list of cell labels
    labels = iter(range(10**6))
    for _ in range(4000):
        seq = rng.randrange(6)
        op = rng.random()
        used = {c for cs in owners.values() for c in cs}
        if op < 0.4:
            n = rng.randrange(1, 8)
            if n <= 64 - len(used):
                cells.append(seq, n)
                owners.setdefault(seq, []).extend(next(labels) for _ in range(n))
            else:
                with pytest.raises(ValueError):
                    cells.append(seq, n)
        elif op < 0.6 and owners.get(seq) and not owners.get(dst := rng.randrange(6)):
            length = rng.randrange(len(owners[seq]) + 1)
            cells.copy_prefix(seq, dst, length)
            owners[dst] = owners[seq][:length]
        elif op < 0.8:
            length = rng.randrange(cells.length(seq) + 1)
            cells.truncate(seq, length)
            owners.setdefault(seq, [])[length:] = []
        else:
            alone = sum(1 for c in owners.get(seq, []) if sum(c in cs for cs in owners.values()) == 1)
            assert cells.cells_freed_by_release(seq) == alone
            assert cells.release(seq) == alone
            owners.pop(seq, None)
        cells.check()
        assert cells.used == len({c for cs in owners.values() for c in cs})
