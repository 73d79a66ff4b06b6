"""Grouping batch lines by shared token prefix."""

from __future__ import annotations

import random

from minimill.batch.grouping import GroupedLine, group_lines
from minimill.kv.radix import common_length


def line(number: int, tokens: list[int], model: str = "m") -> GroupedLine:
    return GroupedLine(number, model, tuple(tokens))


def test_lines_sharing_a_prefix_form_one_group_whatever_their_order() -> None:
    prefix = list(range(100))
    lines = [line(n, prefix + [1000 + n, 7]) for n in range(1, 9)]
    others = [line(20 + n, [5000 + 10 * n + t for t in range(50)]) for n in range(3)]
    mixed = lines + others
    random.Random(1).shuffle(mixed)
    groups = group_lines(mixed, min_prefix=32)
    shared = [g for g in groups if g.prefix]
    assert len(shared) == 1 and shared[0].prefix == tuple(prefix) and sorted(shared[0].lines) == list(range(1, 9))
    assert sorted(n for g in groups for n in g.lines) == sorted(x.number for x in mixed)  # every line once
    assert all(len(g.lines) == 1 for g in groups if not g.prefix)


def test_an_outlier_with_a_short_common_prefix_does_not_shrink_the_group() -> None:
    base = list(range(40))
    deep = [line(n, base + list(range(100, 300)) + [900 + n]) for n in range(1, 6)]
    outlier = line(9, base + [77, 78, 79])
    groups = group_lines([*deep, outlier], min_prefix=16)
    by_lines = {tuple(sorted(g.lines)): g for g in groups}
    assert len(by_lines[(1, 2, 3, 4, 5)].prefix) == 240  # not cut down to the 40 tokens the outlier shares
    assert (9,) in by_lines


def test_prefix_leaves_the_last_token_of_the_shortest_prompt_and_respects_min_prefix() -> None:
    same = [line(n, list(range(50))) for n in range(1, 4)]
    (group,) = group_lines(same, min_prefix=8)
    assert len(group.prefix) == 49
    short = [line(n, [1, 2, 3, 100 + n]) for n in range(1, 4)]
    assert all(not g.prefix and len(g.lines) == 1 for g in group_lines(short, min_prefix=8))


def test_models_are_grouped_apart_and_common_length() -> None:
    tokens = list(range(64)) + [1]
    groups = group_lines([line(1, tokens, "a"), line(2, tokens, "b")], min_prefix=8)
    assert sorted((g.model, g.lines) for g in groups) == [("a", (1,)), ("b", (2,))]
    assert common_length([1, 2, 3], [1, 2, 4]) == 2 and common_length([1], [1, 2]) == 1
