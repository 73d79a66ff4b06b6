"""A model of llama.cpp's unified KV cache cells, so the scheduler can count without asking it.

Each cell holds one position and is shared by every sequence that copied it; computing a token
takes a fresh cell, `copy_prefix` shares cells (llama_memory_seq_cp), and a cell is free again
once no sequence refers to it (llama_memory_seq_rm).
"""

from __future__ import annotations

import itertools


class KVCells:
    """Cell reference counts per sequence. Mutated only by the scheduler's thread."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._cells: dict[int, list[int]] = {}  # seq -> cell id per position
        self._refs: dict[int, int] = {}  # cell id -> number of sequences using it
        self._ids = itertools.count()

    @property
    def used(self) -> int:
        """Cells referenced by at least one sequence."""
        return len(self._refs)

    @property
    def free(self) -> int:
        """Cells available for new tokens."""
        return self.capacity - len(self._refs)

    def length(self, seq: int) -> int:
        """Positions `seq` holds (0 if unknown)."""
        return len(self._cells.get(seq, ()))

    def sequences(self) -> list[int]:
        """Sequences holding at least one position."""
        return [seq for seq, cells in self._cells.items() if cells]

    def can_append(self, n: int) -> bool:
        """Whether `n` fresh cells are free."""
        return n <= self.free

    def append(self, seq: int, n: int) -> None:
        """`seq` gains `n` positions at its end, each a fresh cell; ValueError if they are not free."""
        if n > self.free:
            raise ValueError(f"{n} cells asked for, {self.free} free")
        fresh = [next(self._ids) for _ in range(n)]
        self._refs.update(dict.fromkeys(fresh, 1))
        self._cells.setdefault(seq, []).extend(fresh)

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """The empty `dst` shares `src`'s first `length` cells."""
        if self.length(dst):
            raise ValueError(f"sequence {dst} is not empty")
        if length > self.length(src):
            raise ValueError(f"sequence {src} holds {self.length(src)} positions, not {length}")
        shared = self._cells[src][:length] if length else []
        for cell in shared:
            self._refs[cell] += 1
        self._cells[dst] = list(shared)

    def truncate(self, seq: int, length: int) -> int:
        """Keep only `seq`'s first `length` positions; returns the cells freed."""
        cells = self._cells.get(seq, [])
        dropped = cells[length:]
        del cells[length:]
        freed = 0
        for cell in dropped:
            self._refs[cell] -= 1
            if self._refs[cell] == 0:
                del self._refs[cell]
                freed += 1
        return freed

    def release(self, seq: int) -> int:
        """Drop `seq` entirely; returns the cells freed."""
        freed = self.truncate(seq, 0)
        self._cells.pop(seq, None)
        return freed

    def cells_freed_by_release(self, seq: int) -> int:
        """How many cells `release(seq)` would free, without changing anything."""
        return sum(1 for cell in self._cells.get(seq, ()) if self._refs[cell] == 1)

    def check(self) -> None:
        """Assert: reference counts match the sequences' cell lists, and nothing is over capacity."""
        counted: dict[int, int] = {}
        for seq, cells in self._cells.items():
            assert len(set(cells)) == len(cells), f"sequence {seq} holds a cell twice"
            for cell in cells:
                counted[cell] = counted.get(cell, 0) + 1
        assert counted == self._refs, "reference counts disagree with the sequences"
        assert 0 <= self.used <= self.capacity, "more cells used than exist"
