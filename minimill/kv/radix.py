"""Token-prefix index: which sequences (holders) share how long a prefix with a new prompt.

A compressed radix tree per namespace (tenant): edges carry runs of token ids, each node knows the
holders whose token list ends there. Holders are sequence ids; no KV, no model in here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class _Node:
    edge: tuple[int, ...]  # tokens on the edge from the parent to this node
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)
    holders: set[int] = field(default_factory=set)  # holders whose list ends exactly here

    def subtree_holders(self) -> list[int]:
        found: list[int] = []
        stack = [self]
        while stack:
            node = stack.pop()
            found.extend(node.holders)
            stack.extend(node.children.values())
        return found


def _common(a: Sequence[int], a_start: int, b: tuple[int, ...]) -> int:
    """Length of the common prefix of a[a_start:] and b."""
    n = min(len(a) - a_start, len(b))
    i = 0
    while i < n and a[a_start + i] == b[i]:
        i += 1
    return i


class RadixIndex:
    """Holders indexed by their token lists, one tree per namespace. Not thread-safe."""

    def __init__(self) -> None:
        self._roots: dict[str, _Node] = {}
        self._where: dict[int, tuple[str, _Node, tuple[int, ...]]] = {}

    def __contains__(self, holder: object) -> bool:
        return holder in self._where

    def __len__(self) -> int:
        return len(self._where)

    def tokens_of(self, holder: int) -> tuple[int, ...]:
        """The token list `holder` was indexed under."""
        return self._where[holder][2]

    def insert(self, namespace: str, holder: int, tokens: Sequence[int]) -> None:
        """Index `holder` under `tokens`, replacing any earlier entry of the same holder."""
        if holder in self._where:
            self.remove(holder)
        tokens = tuple(tokens)
        node = self._roots.setdefault(namespace, _Node(edge=(), parent=None))
        depth = 0
        while depth < len(tokens):
            child = node.children.get(tokens[depth])
            if child is None:
                leaf = _Node(edge=tokens[depth:], parent=node)
                node.children[tokens[depth]] = leaf
                node, depth = leaf, len(tokens)
                break
            shared = _common(tokens, depth, child.edge)
            if shared < len(child.edge):
                child = self._split(child, shared)
            node, depth = child, depth + shared
        node.holders.add(holder)
        self._where[holder] = (namespace, node, tokens)

    def _split(self, node: _Node, at: int) -> _Node:
        """Cut `node`'s edge after `at` tokens; returns the new middle node."""
        parent = node.parent
        assert parent is not None and 0 < at < len(node.edge)
        middle = _Node(edge=node.edge[:at], parent=parent)
        parent.children[middle.edge[0]] = middle
        node.edge = node.edge[at:]
        node.parent = middle
        middle.children[node.edge[0]] = node
        return middle

    def remove(self, holder: int) -> None:
        """Drop `holder` (KeyError if unknown) and prune or merge nodes left without purpose."""
        namespace, node, _ = self._where.pop(holder)
        node.holders.discard(holder)
        while node.parent is not None and not node.holders and len(node.children) <= 1:
            parent = node.parent
            if node.children:  # one child: merge it into this node's place
                (child,) = node.children.values()
                child.edge = node.edge + child.edge
                child.parent = parent
                parent.children[child.edge[0]] = child
                break
            del parent.children[node.edge[0]]
            node = parent
        root = self._roots[namespace]
        if not root.children and not root.holders:
            del self._roots[namespace]

    def match(self, namespace: str, tokens: Sequence[int]) -> dict[int, int]:
        """Pure lookup: holder → length of its common prefix with `tokens`, for every holder sharing ≥ 1."""
        root = self._roots.get(namespace)
        result: dict[int, int] = {}
        if root is None or not tokens:
            return result
        node, depth = root, 0
        while depth < len(tokens):
            child = node.children.get(tokens[depth])
            if child is None:
                break
            shared = _common(tokens, depth, child.edge)
            if shared < len(child.edge):
                for holder in child.subtree_holders():
                    result[holder] = depth + shared
                break
            depth += shared
            for key, other in child.children.items():
                if depth >= len(tokens) or key != tokens[depth]:
                    for holder in other.subtree_holders():
                        result.setdefault(holder, depth)
            for holder in child.holders:
                result[holder] = depth
            node = child
        return result

    def check(self) -> None:
        """Assert the tree's invariants; raises AssertionError on the first broken one."""
        seen: dict[int, tuple[int, ...]] = {}
        for namespace, root in self._roots.items():
            assert root.edge == () and root.parent is None, "root must have an empty edge"
            stack: list[tuple[_Node, tuple[int, ...]]] = [(root, ())]
            while stack:
                node, path = stack.pop()
                for key, child in node.children.items():
                    assert child.edge and child.edge[0] == key, "child keyed by the wrong token"
                    assert child.parent is node, "broken parent link"
                    assert child.holders or len(child.children) >= 2, "node without purpose"
                    stack.append((child, path + child.edge))
                for holder in node.holders:
                    assert holder not in seen, f"holder {holder} indexed twice"
                    assert self._where[holder][0] == namespace and self._where[holder][1] is node
                    seen[holder] = path
        assert seen.keys() == self._where.keys(), "holder table and tree disagree"
        for holder, path in seen.items():
            assert self._where[holder][2] == path, f"holder {holder} indexed under the wrong tokens"
