"""RadixIndex: exact expectations, then a seeded random walk against a brute-force reference."""

from __future__ import annotations

import random

import pytest

from minimill.kv.radix import RadixIndex


def common(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_shared_prefix_and_split_mid_edge() -> None:
    index = RadixIndex()
    index.insert("t", 1, [1, 2, 3, 4])
    index.insert("t", 2, [1, 2, 9])
    index.check()
    assert index.match("t", [1, 2, 3, 4, 5]) == {1: 4, 2: 2}
    assert index.match("t", [1, 2, 9, 9]) == {1: 2, 2: 3}
    assert index.match("t", [1]) == {1: 1, 2: 1}
    assert index.match("t", [7]) == {}


def test_holder_that_is_a_prefix_of_another() -> None:
    index = RadixIndex()
    index.insert("t", 1, [5, 6])
    index.insert("t", 2, [5, 6, 7, 8])
    index.check()
    assert index.match("t", [5, 6, 7]) == {1: 2, 2: 3}
    assert index.match("t", [5, 6]) == {1: 2, 2: 2}


def test_reinsert_replaces_and_remove_merges() -> None:
    index = RadixIndex()
    index.insert("t", 1, [1, 2, 3])
    index.insert("t", 2, [1, 2, 4])
    index.insert("t", 1, [9])
    index.check()
    assert index.tokens_of(1) == (9,)
    assert index.match("t", [1, 2, 3]) == {2: 2}
    index.remove(2)
    index.check()
    assert len(index) == 1 and 2 not in index
    with pytest.raises(KeyError):
        index.remove(2)


def test_namespaces_never_match_each_other() -> None:
    index = RadixIndex()
    index.insert("alice", 1, [1, 2, 3])
    index.insert("bob", 2, [1, 2, 3])
    assert index.match("alice", [1, 2, 3]) == {1: 3}
    assert index.match("mallory", [1, 2, 3]) == {}


def test_random_operations_match_brute_force() -> None:
    rng = random.Random(1234)
    index = RadixIndex()
    reference: dict[int, tuple[str, tuple[int, ...]]] = {}
    for _ in range(3000):
        op = rng.random()
        if op < 0.45:
            holder = rng.randrange(40)
            namespace = rng.choice("ab")
            tokens = tuple(rng.randrange(3) for _ in range(rng.randrange(8)))
            index.insert(namespace, holder, tokens)
            reference[holder] = (namespace, tokens)
        elif op < 0.7 and reference:
            holder = rng.choice(sorted(reference))
            index.remove(holder)
            del reference[holder]
        else:
            namespace = rng.choice("ab")
            query = tuple(rng.randrange(3) for _ in range(rng.randrange(1, 9)))
            expected = {h: common(t, query) for h, (ns, t) in reference.items() if ns == namespace}
            assert index.match(namespace, query) == {h: n for h, n in expected.items() if n > 0}
        index.check()
        assert len(index) == len(reference)
