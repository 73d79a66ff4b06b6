"""Grouping batch lines by the longest token prefix they share, so each group's prefix is computed once.

Lines of one model are sorted by their prompt tokens, so that lines sharing a prefix sit side by
side and the prefix shared by a run of them is the smallest common prefix length (LCP) between
neighbours in the run. A run is split at its smallest LCP whenever the two halves save more prefill
than the whole (a group of k lines with prefix P saves (k - 1) * P tokens); what stays together
shares its prefix. Deeper sharing inside a group is left to the engine's automatic prefix reuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from minimill.kv.radix import common_length


@dataclass(frozen=True, slots=True)
class GroupedLine:
    """A line to group: its number, its model and its prompt's token ids."""

    number: int
    model: str
    tokens: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Group:
    """Lines of one model whose prompts all start with `prefix` (empty: nothing worth sharing)."""

    model: str
    prefix: tuple[int, ...]
    lines: tuple[int, ...]


def group_lines(lines: Sequence[GroupedLine], min_prefix: int) -> list[Group]:
    """Groups covering every line once; a prefix is shared only by 2+ lines and is >= `min_prefix` tokens.

    A prefix stops one token short of its shortest prompt: the last token is computed for its logits.
    """
    groups: list[Group] = []
    for model in sorted({line.model for line in lines}):
        ordered = sorted((line for line in lines if line.model == model), key=lambda line: line.tokens)
        lcp = [common_length(a.tokens, b.tokens) for a, b in zip(ordered, ordered[1:], strict=False)]
        stack = [(0, len(ordered))]  # half-open runs of `ordered`; explicit stack: runs can nest deeply
        while stack:
            start, end = stack.pop()
            shared = _shared(ordered, lcp, start, end, min_prefix)
            whole = (end - start - 1) * shared
            split = _split(lcp, start, end, min_prefix)
            # Nothing shared at this level: look deeper. Otherwise split only if the parts save more.
            if split is not None and (whole == 0 or sum(_saving(ordered, lcp, a, b, min_prefix)
                                                        for a, b in split) > whole):
                stack.extend(split)
            elif shared:
                groups.append(Group(model, ordered[start].tokens[:shared],
                                    tuple(line.number for line in ordered[start:end])))
            else:
                groups.extend(Group(model, (), (line.number,)) for line in ordered[start:end])
    return groups


def _shared(ordered: Sequence[GroupedLine], lcp: list[int], start: int, end: int, min_prefix: int) -> int:
    """The prefix the run's lines all share (short of each one's last token); 0 if under `min_prefix` or
    the run is a single line."""
    if end - start < 2:
        return 0
    shared = min(min(lcp[start:end - 1]), min(len(line.tokens) for line in ordered[start:end]) - 1)
    return shared if shared >= min_prefix else 0


def _saving(ordered: Sequence[GroupedLine], lcp: list[int], start: int, end: int, min_prefix: int) -> int:
    """Prefill tokens saved if the run became one group (k lines with prefix P save (k - 1) * P)."""
    return (end - start - 1) * _shared(ordered, lcp, start, end, min_prefix)


def _split(lcp: list[int], start: int, end: int, min_prefix: int) -> list[tuple[int, int]] | None:
    """The run cut wherever neighbours share its smallest LCP; None if that leaves it whole."""
    if end - start < 2:
        return None
    inner = lcp[start:end - 1]
    low = min(inner)
    cuts = [start + i + 1 for i, value in enumerate(inner) if value == low]
    if low >= min_prefix and len(cuts) == len(inner):
        return None  # every neighbour shares the same prefix: nothing finer to find
    bounds = [start, *cuts, end]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]
