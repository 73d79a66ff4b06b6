"""RadixIndex: exact expectations on tiny trees, then a seeded random walk against a brute-force reference."""

from __future__ import annotations

import random
from typing import Any

import pytest

from minimill.kv.radix import RadixIndex

Shape = dict[tuple[int, ...], Any]  # edge -> (sorted holders, shape of the children)


def shape(index: RadixIndex, namespace: str) -> tuple[list[int], Shape]:
    """The tree of `namespace` as nested plain data: (holders at the root, {edge: (holders, children)})."""

    def walk(node: Any) -> tuple[list[int], Shape]:
        return sorted(node.holders), {child.edge: walk(child) for child in node.children.values()}

    return walk(index._roots[namespace])


def common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Brute-force length of the common prefix of a and b."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_empty_index() -> None:
    index = RadixIndex()
    index.check()
    assert len(index) == 0 and 1 not in index and index.num_nodes() == 0
    assert index.match("t", [1, 2, 3]) == {}
    assert index.match("t", []) == {}
    with pytest.raises(KeyError):
        index.tokens_of(1)
    with pytest.raises(KeyError):
        index.remove(1)


def test_single_holder_against_longer_equal_shorter_and_other_queries() -> None:
    index = RadixIndex()
    index.insert("t", 7, [1, 2, 3])
    index.check()
    assert index.tokens_of(7) == (1, 2, 3) and 7 in index and len(index) == 1
    assert shape(index, "t") == ([], {(1, 2, 3): ([7], {})})
    assert index.match("t", [1, 2, 3, 4, 5]) == {7: 3}
    assert index.match("t", [1, 2, 3]) == {7: 3}
    assert index.match("t", [1, 2]) == {7: 2}
    assert index.match("t", [1, 9, 3]) == {7: 1}
    assert index.match("t", [2, 2, 3]) == {}
    assert index.match("t", []) == {}


def test_divergence_mid_edge_splits_it() -> None:
    index = RadixIndex()
    index.insert("t", 1, [1, 2, 3, 4])
    index.insert("t", 2, [1, 2, 9])
    index.check()
    assert shape(index, "t") == ([], {(1, 2): ([], {(3, 4): ([1], {}), (9,): ([2], {})})})
    assert index.num_nodes() == 4
    assert index.match("t", [1, 2, 3, 4, 5]) == {1: 4, 2: 2}
    assert index.match("t", [1, 2, 3]) == {1: 3, 2: 2}
    assert index.match("t", [1, 2, 9, 9]) == {1: 2, 2: 3}
    assert index.match("t", [1, 2, 7]) == {1: 2, 2: 2}
    assert index.match("t", [1, 2]) == {1: 2, 2: 2}
    assert index.match("t", [1]) == {1: 1, 2: 1}
    assert index.match("t", [7]) == {}


def test_divergence_at_the_first_token_gives_two_root_children() -> None:
    index = RadixIndex()
    index.insert("t", 1, [1, 2])
    index.insert("t", 2, [3, 4])
    index.check()
    assert shape(index, "t") == ([], {(1, 2): ([1], {}), (3, 4): ([2], {})})
    assert index.match("t", [3, 4, 5]) == {2: 2}
    assert index.match("t", [1]) == {1: 1}


def test_holder_that_is_a_prefix_of_another_short_first() -> None:
    index = RadixIndex()
    index.insert("t", 1, [5, 6])
    index.insert("t", 2, [5, 6, 7, 8])
    index.check()
    assert shape(index, "t") == ([], {(5, 6): ([1], {(7, 8): ([2], {})})})
    assert index.match("t", [5, 6, 7]) == {1: 2, 2: 3}
    assert index.match("t", [5, 6]) == {1: 2, 2: 2}
    assert index.match("t", [5, 6, 7, 8, 9]) == {1: 2, 2: 4}
    assert index.match("t", [5, 6, 0]) == {1: 2, 2: 2}


def test_holder_that_is_a_prefix_of_another_long_first_splits() -> None:
    index = RadixIndex()
    index.insert("t", 2, [5, 6, 7, 8])
    index.insert("t", 1, [5, 6])
    index.check()
    assert shape(index, "t") == ([], {(5, 6): ([1], {(7, 8): ([2], {})})})
    assert index.match("t", [5, 6, 7]) == {1: 2, 2: 3}


def test_holders_with_equal_tokens_share_a_node() -> None:
    index = RadixIndex()
    index.insert("t", 1, [4, 4, 4])
    index.insert("t", 2, (4, 4, 4))
    index.check()
    assert shape(index, "t") == ([], {(4, 4, 4): ([1, 2], {})})
    assert index.match("t", [4, 4]) == {1: 2, 2: 2}
    index.remove(1)
    index.check()
    assert shape(index, "t") == ([], {(4, 4, 4): ([2], {})})
    assert index.match("t", [4, 4, 4, 4]) == {2: 3}


def test_empty_token_list_is_indexed_but_never_matched() -> None:
    index = RadixIndex()
    index.insert("t", 1, [])
    index.check()
    assert 1 in index and index.tokens_of(1) == () and len(index) == 1
    assert shape(index, "t") == ([1], {})
    index.insert("t", 2, [1, 2])
    assert index.match("t", [1, 2]) == {2: 2}
    assert index.match("t", []) == {}
    index.remove(1)
    index.remove(2)
    index.check()
    assert index.num_nodes() == 0


def test_reinsert_replaces_the_old_entry() -> None:
    index = RadixIndex()
    index.insert("t", 1, [1, 2, 3])
    index.insert("t", 2, [1, 2, 4])
    index.insert("t", 1, [9])
    index.check()
    assert index.tokens_of(1) == (9,) and len(index) == 2
    assert shape(index, "t") == ([], {(1, 2, 4): ([2], {}), (9,): ([1], {})})
    assert index.match("t", [1, 2, 3]) == {2: 2}
    assert index.match("t", [9]) == {1: 1}


def test_reinsert_into_another_namespace_moves_the_holder() -> None:
    index = RadixIndex()
    index.insert("alice", 1, [1, 2])
    index.insert("bob", 1, [1, 2])
    index.check()
    assert index.match("alice", [1, 2]) == {}
    assert index.match("bob", [1, 2]) == {1: 2}
    assert index.num_nodes() == 2  # alice's empty tree is gone


def test_namespaces_never_match_each_other() -> None:
    index = RadixIndex()
    index.insert("alice", 1, [1, 2, 3])
    index.insert("bob", 2, [1, 2, 3])
    index.insert("bob", 3, [1, 2])
    index.check()
    assert index.match("alice", [1, 2, 3]) == {1: 3}
    assert index.match("bob", [1, 2, 3]) == {2: 3, 3: 2}
    assert index.match("mallory", [1, 2, 3]) == {}
    index.remove(1)
    assert index.match("alice", [1, 2, 3]) == {}
    assert index.match("bob", [1, 2, 3]) == {2: 3, 3: 2}


def test_remove_merges_nodes_back() -> None:
    index = RadixIndex()
    index.insert("t", 1, [1, 2, 3, 4])
    index.insert("t", 2, [1, 2, 5])
    assert index.num_nodes() == 4
    index.remove(2)
    index.check()
    assert shape(index, "t") == ([], {(1, 2, 3, 4): ([1], {})})
    assert index.num_nodes() == 2
    assert index.match("t", [1, 2, 3, 4]) == {1: 4}


def test_remove_a_holder_in_the_middle_merges_its_only_child() -> None:
    index = RadixIndex()
    index.insert("t", 1, [1, 2])
    index.insert("t", 2, [1, 2, 3, 4])
    index.remove(1)
    index.check()
    assert shape(index, "t") == ([], {(1, 2, 3, 4): ([2], {})})
    assert index.match("t", [1, 2]) == {2: 2}


def test_remove_a_holder_at_a_branch_keeps_the_branch() -> None:
    index = RadixIndex()
    index.insert("t", 1, [1, 2])
    index.insert("t", 2, [1, 2, 3])
    index.insert("t", 3, [1, 2, 4])
    index.remove(1)
    index.check()
    assert shape(index, "t") == ([], {(1, 2): ([], {(3,): ([2], {}), (4,): ([3], {})})})
    assert index.match("t", [1, 2]) == {2: 2, 3: 2}


def test_remove_prunes_a_chain_of_empty_nodes() -> None:
    index = RadixIndex()
    index.insert("t", 1, [1])
    index.insert("t", 2, [1, 2, 3])
    index.insert("t", 3, [1, 2, 4])
    index.insert("t", 4, [1, 2, 4, 5])
    index.insert("t", 5, [1, 2, 4, 6])
    for holder in (4, 5, 3):
        index.remove(holder)
        index.check()
    assert shape(index, "t") == ([], {(1,): ([1], {(2, 3): ([2], {})})})
    index.remove(1)
    index.check()
    assert shape(index, "t") == ([], {(1, 2, 3): ([2], {})})
    index.remove(2)
    index.check()
    assert index.num_nodes() == 0 and len(index) == 0
    with pytest.raises(KeyError):
        index.remove(2)


def test_match_changes_nothing() -> None:
    index = RadixIndex()
    index.insert("t", 1, [1, 2, 3, 4])
    index.insert("t", 2, [1, 2, 3, 5])
    before = shape(index, "t")
    for query in ([1, 2], [1, 2, 3], [1, 2, 3, 4, 5], [1, 7], [9], []):
        index.match("t", query)
        index.match("other", query)
    index.check()
    assert shape(index, "t") == before and index.num_nodes() == 4 and "other" not in index._roots


def test_match_accepts_any_sequence_of_ints() -> None:
    index = RadixIndex()
    index.insert("t", 1, range(5))
    assert index.tokens_of(1) == (0, 1, 2, 3, 4)
    assert index.match("t", range(3)) == {1: 3}
    assert index.match("t", (0, 1, 2, 3, 4, 5)) == {1: 5}
    assert index.match("t", [0, 1, 9]) == {1: 2}


def test_repr_shows_counts_not_tokens() -> None:
    index = RadixIndex()
    index.insert("t", 1, [12345, 67890])
    assert repr(index) == "RadixIndex(holders=1, namespaces=1)"


def test_check_catches_corruption() -> None:
    def middle() -> Any:
        """A fresh valid index's node for [1, 2], which has children keyed 3 and 4."""
        index = RadixIndex()
        index.insert("t", 1, [1, 2, 3])
        index.insert("t", 2, [1, 2, 4])
        index.check()
        corrupted.append(index)
        return index._roots["t"].children[1]

    corrupted: list[RadixIndex] = []
    middle().children[3].edge = (3, 3)
    middle().children[3].holders.clear()
    middle().children[3].holders.add(2)
    middle().children[3].edge = (5,)
    middle().children.pop(4)
    middle().parent = None
    messages = ["wrong tokens", "without holders", "indexed twice", "keyed by 3", "be merged", "parent"]
    for index, message in zip(corrupted, messages, strict=True):
        with pytest.raises(AssertionError, match=message):
            index.check()


def test_random_operations_match_brute_force() -> None:
    rng = random.Random(1234)
    index = RadixIndex()
    reference: dict[int, tuple[str, tuple[int, ...]]] = {}  # holder -> (namespace, tokens)
    for _ in range(4000):
        op = rng.random()
        if op < 0.4:
            holder = rng.randrange(40)
            namespace = rng.choice("ab")
            tokens = tuple(rng.randrange(3) for _ in range(rng.randrange(9)))
            index.insert(namespace, holder, list(tokens))
            reference[holder] = (namespace, tokens)
        elif op < 0.65 and reference:
            holder = rng.choice(sorted(reference))
            index.remove(holder)
            del reference[holder]
        elif op < 0.7:
            holder = rng.randrange(40, 45)
            with pytest.raises(KeyError):
                index.remove(holder)
        else:
            namespace = rng.choice("abc")
            query = tuple(rng.randrange(3) for _ in range(rng.randrange(10)))
            expected = {
                holder: common_prefix(tokens, query)
                for holder, (ns, tokens) in reference.items()
                if ns == namespace and common_prefix(tokens, query) > 0
            }
            assert index.match(namespace, query) == expected
        index.check()
        assert len(index) == len(reference)
        assert all(index.tokens_of(holder) == tokens for holder, (_, tokens) in reference.items())
    for holder in list(reference):
        index.remove(holder)
        index.check()
    assert len(index) == 0 and index.num_nodes() == 0


def test_tree_size_follows_the_holders() -> None:
    rng = random.Random(1234)
    index = RadixIndex()
    for round_ in range(20):
        for holder in range(50):
            tokens = [rng.randrange(4) for _ in range(rng.randrange(1, 30))]
            index.insert("t", holder + 1000 * round_, tokens)
        # A compressed tree has fewer than two nodes per holder, plus the root.
        assert index.num_nodes() <= 2 * len(index) + 1
        for holder in range(50):
            index.remove(holder + 1000 * round_)
        assert index.num_nodes() == 0
