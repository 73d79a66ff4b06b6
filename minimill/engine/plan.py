"""The frozen contract between the scheduler (decides) and the runner (does one llama_decode)."""

from __future__ import annotations

from dataclasses import dataclass

from minimill.engine.types import TokenLogprob


@dataclass(frozen=True, slots=True)
class PrefixCopy:
    """Share `src`'s KV at positions [0, length) with the empty sequence `dst`."""

    src: int
    dst: int
    length: int


@dataclass(frozen=True, slots=True)
class Swap:
    """Move sequence `key`'s KV between llama seq `slot` and host memory (out: save, in: restore)."""

    key: int
    slot: int


@dataclass(frozen=True, slots=True)
class Load:
    """Restore serialised KV bytes from a colder tier into the empty llama seq `slot`, keeping only its first
    `keep` positions (None: all)."""

    slot: int
    data: bytes
    keep: int | None = None

    def __repr__(self) -> str:
        return f"Load(slot={self.slot}, bytes={len(self.data)}, keep={self.keep})"


@dataclass(frozen=True, slots=True)
class PlanItem:
    """Compute `tokens` of sequence `key` (llama seq `slot`) at positions start.. ; sample after the last.

    With `drafted` > 0 the last `drafted` tokens are a speculative draft, not yet the sequence's: every
    position from the sequence's last token on is sampled, the draft kept while the samples equal it, and
    the KV of the positions after what was kept removed (`speculation.verify`)."""

    key: int
    slot: int
    start: int
    tokens: tuple[int, ...]
    sample: bool
    # Scoring a prompt: the token that follows each position (-1: none to score); every row then has logits.
    targets: tuple[int, ...] = ()
    drafted: int = 0

    def __repr__(self) -> str:
        return (f"PlanItem(key={self.key}, slot={self.slot}, start={self.start}, n={len(self.tokens)}, "
                f"drafted={self.drafted})")


@dataclass(frozen=True, slots=True)
class StepPlan:
    """One engine step, done in this order: save `spills` (finished prefixes leaving the live KV for RAM,
    each under its RAM key) and `swap_out`, free `releases`, load `swap_in` and `loads`, apply `cuts`
    (slot, length: drop that slot's positions from `length` on), apply `copies`, then one decode over
    `items`."""

    spills: tuple[Swap, ...] = ()
    swap_out: tuple[Swap, ...] = ()
    releases: tuple[int, ...] = ()
    swap_in: tuple[Swap, ...] = ()
    loads: tuple[Load, ...] = ()
    cuts: tuple[tuple[int, int], ...] = ()
    copies: tuple[PrefixCopy, ...] = ()
    items: tuple[PlanItem, ...] = ()

    @property
    def num_tokens(self) -> int:
        """Rows in the decode batch."""
        return sum(len(item.tokens) for item in self.items)

    @property
    def empty(self) -> bool:
        """Nothing to do at all."""
        return not (self.spills or self.swap_out or self.releases or self.swap_in or self.loads or self.cuts
                    or self.copies or self.items)


@dataclass(frozen=True, slots=True)
class SampledToken:
    """The token drawn for sequence `key`, with its logprobs when they were asked for."""

    key: int
    token: int
    logprob: TokenLogprob | None = None


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one decode produced: a token for every item whose `sample` was set (1 to drafted + 1 of them, in
    order, for an item with a draft), and for items with
    `targets` the log-probability of each target (by sequence key, in position order), and the bytes
    the plan's `spills` saved (by RAM key)."""

    sampled: tuple[SampledToken, ...]
    scored: tuple[tuple[int, tuple[TokenLogprob, ...]], ...] = ()
    spilled: tuple[tuple[int, bytes], ...] = ()
