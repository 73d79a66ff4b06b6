"""A model of llama.cpp's unified KV cache cells, so the scheduler can count them without asking it.

Each cell holds one position and is shared by every sequence that copied it: computing a token takes
a fresh cell, `copy_prefix` shares cells (llama_memory_seq_cp), and a cell is free again once no
sequence refers to it (llama_memory_seq_rm). Cell ids are labels, not llama.cpp's cell indices.
"""

from __future__ import annotations

import itertools


class KVCells:
    """Cell reference counts per sequence. Not thread-safe: the scheduler's thread owns it.

    Every mutating method either succeeds completely or raises ValueError and changes nothing.
    """

    __slots__ = ("capacity", "_cells", "_refs", "_ids")

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, not {capacity}")
        self.capacity = capacity
        self._cells: dict[int, list[int]] = {}  # seq -> cell id at each of its positions
        self._refs: dict[int, int] = {}  # cell id -> number of sequences holding it (> 0)
        self._ids = itertools.count()

    def __repr__(self) -> str:
        return f"KVCells(used={self.used}, capacity={self.capacity}, sequences={len(self._cells)})"

    @property
    def used(self) -> int:
        """Cells held by at least one sequence."""
        return len(self._refs)

    @property
    def free(self) -> int:
        """Cells available for new tokens (capacity - used)."""
        return self.capacity - len(self._refs)

    def length(self, seq: int) -> int:
        """Positions `seq` holds (0 if unknown)."""
        return len(self._cells.get(seq, ()))

    def sequences(self) -> list[int]:
        """Sequences holding at least one position."""
        return list(self._cells)

    def can_append(self, n: int) -> bool:
        """Whether `n` fresh cells are free."""
        return 0 <= n <= self.free

    def append(self, seq: int, n: int) -> None:
        """`seq` gains `n` positions at its end, each a fresh cell; ValueError if fewer are free."""
        if n < 0:
            raise ValueError(f"cannot append {n} cells")
        if n > self.free:
            raise ValueError(f"{n} cells asked for, {self.free} free")
        if n == 0:
            return
        fresh = list(itertools.islice(self._ids, n))
        self._refs.update(dict.fromkeys(fresh, 1))
        self._cells.setdefault(seq, []).extend(fresh)

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """The empty `dst` shares `src`'s first `length` cells (no new cells are taken).

        ValueError if `dst` holds positions, or `length` is negative or more than `src` holds.
        """
        if self.length(dst):
            raise ValueError(f"sequence {dst} is not empty")
        if not 0 <= length <= self.length(src):
            raise ValueError(f"sequence {src} holds {self.length(src)} positions, cannot share {length}")
        if length == 0:
            return
        shared = self._cells[src][:length]
        for cell in shared:
            self._refs[cell] += 1
        self._cells[dst] = shared

    def truncate(self, seq: int, length: int) -> int:
        """Keep only `seq`'s first `length` positions (all if it holds fewer); returns the cells freed."""
        if length < 0:
            raise ValueError(f"cannot truncate to {length} positions")
        cells = self._cells.get(seq)
        if cells is None or length >= len(cells):
            return 0
        freed = self._unref(cells[length:])
        if length:
            del cells[length:]
        else:
            del self._cells[seq]
        return freed

    def release(self, seq: int) -> int:
        """Drop `seq` entirely (nothing happens if unknown); returns the cells freed."""
        return self.truncate(seq, 0)

    def cells_freed_by_release(self, seq: int) -> int:
        """How many cells `release(seq)` would free (those no other sequence holds); changes nothing."""
        refs = self._refs
        return sum(1 for cell in self._cells.get(seq, ()) if refs[cell] == 1)

    def held_by(self, seqs: list[int]) -> int:
        """Distinct cells held by any of `seqs` (shared cells counted once); changes nothing."""
        return len(set().union(*(self._cells.get(seq, ()) for seq in seqs)))

    def check(self) -> None:
        """Assert: refcounts match the sequences' cells, no sequence holds a cell twice, used <= capacity."""
        counted: dict[int, int] = {}
        for seq, cells in self._cells.items():
            assert cells, f"sequence {seq} kept with no cells"
            assert len(set(cells)) == len(cells), f"sequence {seq} holds a cell twice"
            for cell in cells:
                counted[cell] = counted.get(cell, 0) + 1
        assert all(refs > 0 for refs in self._refs.values()), "a cell with no holder is counted as used"
        assert counted == self._refs, "reference counts disagree with the sequences' cells"
        assert self.used == len(counted), "used disagrees with the cells held"
        assert 0 <= self.used <= self.capacity, f"{self.used} cells used of {self.capacity}"
        assert self.used + self.free == self.capacity, "used + free != capacity"

    def _unref(self, cells: list[int]) -> int:
        """Drop one reference to each of `cells`; returns how many became free."""
        freed = 0
        refs = self._refs
        for cell in cells:
            if refs[cell] == 1:
                del refs[cell]
                freed += 1
            else:
                refs[cell] -= 1
        return freed
