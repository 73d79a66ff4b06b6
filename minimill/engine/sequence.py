"""One choice's state machine: waiting → running → retained (finished, KV kept) or freed."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from minimill.engine.speculation import Drafter


@dataclass(frozen=True, slots=True)
class Pin:
    """Keep this sequence's KV under `name` after it finishes, not evicted before `expires_at`
    (unix seconds) unless its bytes are safe in a colder tier."""

    name: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Preload:
    """Serialised KV of `tokens` to load into a fresh slot before this sequence is admitted, so it
    can copy its prefix from there. Indexed under `namespace` and pinned as `pin`."""

    pin: Pin
    namespace: str
    tokens: tuple[int, ...]
    data: bytes


class SeqStatus(enum.Enum):
    """Where a sequence is in its life."""

    WAITING = "waiting"
    RUNNING = "running"
    RETAINED = "retained"
    FREED = "freed"


@dataclass(slots=True, eq=False)
class Sequence:
    """Token state of one choice. `tokens[:num_computed]` have KV in llama.cpp sequence `slot`.

    The last token of `tokens` is computed in a step whose logits are sampled; a sequence is in
    prefill while `num_computed < num_prompt`.
    """

    key: int
    tenant: str
    tokens: list[int]
    num_prompt: int
    max_tokens: int
    num_computed: int = 0
    cached_tokens: int = 0
    expected_reuse: int = 0  # prompt tokens it will likely copy rather than compute (admission's estimate)
    slot: int | None = None
    status: SeqStatus = SeqStatus.WAITING
    preemptions: int = 0
    swapped: bool = False  # preempted with its KV saved to host memory: resumes by loading it
    admitted_once: bool = field(default=False)
    pin: Pin | None = None  # keep the KV under a name once finished (caches, sessions)
    preload: Preload | None = None  # KV bytes from a colder tier to copy the prefix from
    shared_namespace: str | None = None  # a shared cache's namespace this sequence may also read
    batch: bool = False  # Batch API work: yields to online sequences
    score_prompt: bool = False  # compute every prompt position (no prefix reuse) and score the next token
    drafter: Drafter | None = None  # speculative drafts while decoding (prompt lookup, a prediction)

    @property
    def pending(self) -> int:
        """Tokens not yet computed (1 for a sequence in decode)."""
        return len(self.tokens) - self.num_computed

    @property
    def num_generated(self) -> int:
        """Tokens sampled so far."""
        return len(self.tokens) - self.num_prompt

    @property
    def in_prefill(self) -> bool:
        """True until the whole prompt has KV."""
        return self.num_computed < self.num_prompt

    def __repr__(self) -> str:
        # Ids and counts only: logs must never carry user text or token ids.
        return (f"Sequence(key={self.key}, slot={self.slot}, status={self.status.value}, "
                f"prompt={self.num_prompt}, computed={self.num_computed}, generated={self.num_generated})")
