"""Token-prefix index: which sequences (holders) share how long a prefix with a new prompt.

One compressed radix tree per namespace (tenant): edges carry runs of token ids, each node knows the
holders whose token list ends exactly there. Prefixes never match across namespaces. Holders are
sequence ids; no KV and no model in here. Not thread-safe: the scheduler's thread owns it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share. Slices are compared in C, halving the range: token lists are
    thousands long and usually differ, if at all, near the end."""
    if type(a) is not type(b):  # a list's slice never equals a tuple's
        a, b = list(a), list(b)
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    same, differ = 0, n  # a[:same] == b[:same], a[:differ] != b[:differ]
    while differ - same > 1:
        middle = (same + differ) // 2
        if a[:middle] == b[:middle]:
            same = middle
        else:
            differ = middle
    return same


@dataclass(slots=True, eq=False)
class _Node:
    """A tree node; the root of a namespace has an empty edge and no parent."""

    edge: tuple[int, ...]  # tokens on the edge from the parent to this node
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)  # first token of the child's edge -> child
    holders: set[int] = field(default_factory=set)  # holders whose token list ends exactly here


@dataclass(frozen=True, slots=True)
class _Entry:
    """Where one holder is indexed."""

    namespace: str
    node: _Node
    tokens: tuple[int, ...]


def _shared_length(tokens: tuple[int, ...], start: int, edge: tuple[int, ...]) -> int:
    """Length of the common prefix of tokens[start:] and edge."""
    if tokens[start : start + len(edge)] == edge:  # the usual case, compared in C
        return len(edge)
    limit = min(len(tokens) - start, len(edge))
    shared = 0
    while shared < limit and tokens[start + shared] == edge[shared]:
        shared += 1
    return shared


def _collect(node: _Node, depth: int, result: dict[int, int]) -> None:
    """Map every holder in `node`'s subtree to `depth` in `result`."""
    stack = [node]
    while stack:
        current = stack.pop()
        result.update(dict.fromkeys(current.holders, depth))
        stack.extend(current.children.values())


class RadixIndex:
    """Holders indexed by their token lists, one tree per namespace.

    `insert` and `remove` mutate the tree (splitting, pruning and merging nodes); `match`,
    `tokens_of` and `check` never do.
    """

    __slots__ = ("_roots", "_entries")

    def __init__(self) -> None:
        self._roots: dict[str, _Node] = {}  # only namespaces that index at least one holder
        self._entries: dict[int, _Entry] = {}

    def __contains__(self, holder: object) -> bool:
        return holder in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        # Counts only: token ids are user data and must not reach the logs.
        return f"RadixIndex(holders={len(self._entries)}, namespaces={len(self._roots)})"

    def tokens_of(self, holder: int) -> tuple[int, ...]:
        """The token list `holder` was indexed under; KeyError if unknown."""
        return self._entries[holder].tokens

    def num_nodes(self) -> int:
        """Nodes in all trees, roots included (0 when empty): the index's size, for tests and metrics."""
        count = 0
        stack = list(self._roots.values())
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children.values())
        return count

    def insert(self, namespace: str, holder: int, tokens: Sequence[int]) -> None:
        """Index `holder` under `tokens` in `namespace`, replacing any earlier entry of that holder.

        Mutates: may split one edge and add one leaf.
        """
        if holder in self._entries:
            self.remove(holder)
        tokens = tuple(tokens)
        node = self._roots.setdefault(namespace, _Node(edge=(), parent=None))
        depth = 0
        while depth < len(tokens):
            child = node.children.get(tokens[depth])
            if child is None:
                child = _Node(edge=tokens[depth:], parent=node)
                node.children[tokens[depth]] = child
                node = child
                break
            shared = _shared_length(tokens, depth, child.edge)
            if shared < len(child.edge):
                child = self._split(child, shared)
            node, depth = child, depth + shared
        node.holders.add(holder)
        self._entries[holder] = _Entry(namespace, node, tokens)

    def remove(self, holder: int) -> None:
        """Drop `holder`; KeyError if unknown.

        Mutates: deletes nodes left with no holder below them and merges a node left with one
        child and no holder into that child, so the tree's size follows the holders it indexes.
        """
        entry = self._entries.pop(holder)
        entry.node.holders.discard(holder)
        self._prune(entry.node)
        root = self._roots[entry.namespace]
        if not root.children and not root.holders:
            del self._roots[entry.namespace]

    def match(self, namespace: str, tokens: Sequence[int]) -> dict[int, int]:
        """Holder -> length of its common prefix with `tokens`, for each holder in `namespace` sharing >= 1.

        Pure lookup. Walks the path of `tokens` once; the holders below a node where the path
        leaves them get the depth reached there. Cost: O(len(tokens) + holders returned).
        """
        result: dict[int, int] = {}
        tokens = tuple(tokens)
        node = self._roots.get(namespace)
        depth = 0
        while node is not None and depth < len(tokens):
            child = node.children.get(tokens[depth])
            if child is None:
                break
            shared = _shared_length(tokens, depth, child.edge)
            depth += shared
            if shared < len(child.edge):  # `tokens` diverge or end inside this edge
                _collect(child, depth, result)
                break
            result.update(dict.fromkeys(child.holders, depth))
            next_token = tokens[depth] if depth < len(tokens) else None
            for first, grandchild in child.children.items():
                if first != next_token:
                    _collect(grandchild, depth, result)
            node = child
        return result

    def check(self) -> None:
        """Assert every invariant of the trees and the holder table; AssertionError names the broken one."""
        seen: dict[int, tuple[int, ...]] = {}
        visited: set[int] = set()
        for namespace, root in self._roots.items():
            assert root.edge == () and root.parent is None, f"root of {namespace!r}: edge or parent set"
            assert root.children or root.holders, f"root of {namespace!r} indexes nothing"
            stack: list[tuple[_Node, tuple[int, ...]]] = [(root, ())]
            while stack:
                node, path = stack.pop()
                assert id(node) not in visited, f"node reached twice in {namespace!r} (cycle or shared)"
                visited.add(id(node))
                for holder in node.holders:
                    assert holder not in seen, f"holder {holder} indexed twice"
                    entry = self._entries.get(holder)
                    assert entry is not None, f"holder {holder} in the tree but not in the table"
                    assert entry.namespace == namespace, f"holder {holder} in the wrong namespace"
                    assert entry.node is node, f"holder {holder}'s table entry points at another node"
                    assert entry.tokens == path, f"holder {holder} indexed under the wrong tokens"
                    seen[holder] = path
                for first, child in node.children.items():
                    self._check_child(node, first, child)
                    stack.append((child, path + child.edge))
        missing = self._entries.keys() - seen.keys()
        assert not missing, f"holders {sorted(missing)} in the table but not in any tree"

    @staticmethod
    def _check_child(parent: _Node, first: int, child: _Node) -> None:
        """Assert the invariants of one non-root node."""
        assert child.edge, "non-root node with an empty edge"
        assert child.edge[0] == first, f"child keyed by {first} but its edge starts with {child.edge[0]}"
        assert child.parent is parent, "child's parent link points elsewhere"
        assert child.holders or child.children, "leaf without holders (should have been pruned)"
        assert child.holders or len(child.children) >= 2, "holderless node with one child (should be merged)"

    def _split(self, node: _Node, at: int) -> _Node:
        """Cut `node`'s edge after `at` tokens; returns the new middle node, which takes its place."""
        parent = node.parent
        assert parent is not None and 0 < at < len(node.edge)
        middle = _Node(edge=node.edge[:at], parent=parent)
        parent.children[middle.edge[0]] = middle
        node.edge = node.edge[at:]
        node.parent = middle
        middle.children[node.edge[0]] = node
        return middle

    def _prune(self, node: _Node) -> None:
        """Delete or merge `node` and its ancestors while they hold nothing and do not branch."""
        while node.parent is not None and not node.holders and len(node.children) <= 1:
            parent = node.parent
            if node.children:  # one child: it takes this node's place, with the edges joined
                (child,) = node.children.values()
                child.edge = node.edge + child.edge
                child.parent = parent
                parent.children[child.edge[0]] = child
                return
            del parent.children[node.edge[0]]
            node = parent
