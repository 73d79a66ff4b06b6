"""Admission by expected wait: a request is refused (429) when the time it would wait for other requests
(their prefill ahead of it, and for a free sequence slot) exceeds the limit, not when a fixed number of
requests are queued, and its wait is counted as the fair scheduler will
serve it (`scheduler.fair_order`): its tenant's own backlog, plus at most as much of each other tenant's.

The engine's step thread reports the backlog (prompt tokens still to prefill, per tenant) and how fast
steps compute; callers on any thread ask `admit`. Thread-safe.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from minimill.errors import CapacityExceeded

RATE_SMOOTHING = 0.2  # weight of the newest step in the throughput average
# Until a full step has been measured (a small model on two cores prefills about this), so that a flood at
# start-up is bounded too.
PRIOR_TOKENS_PER_SECOND = 1000.0
PRIOR_DECODE_STEP_SECONDS = 0.05  # one decode step, until one has been measured
REUSE_BLOCK_TOKENS = 32  # prompts are remembered in blocks of this many tokens
REUSE_MEMORY_BLOCKS = 65_536  # blocks remembered at most, all tenants together (least recent forgotten)


def expected_wait(backlog: Mapping[str, int], tenant: str, prompt_tokens: int, tokens_per_second: float) -> float:
    """Seconds until a request of `prompt_tokens` from `tenant` has its prompt computed, when tenants take
    turns: all of its tenant's backlog and its own prompt, and of every other tenant at most that much."""
    mine = backlog.get(tenant, 0) + prompt_tokens
    ahead = mine + sum(min(tokens, mine) for other, tokens in backlog.items() if other != tenant)
    return ahead / tokens_per_second


def slot_wait(waiting: Mapping[str, int], tenant: str, free_slots: int, slots: int, service_seconds: float) -> float:
    """Seconds until a request from `tenant` gets a sequence slot, when tenants take turns: the requests
    ahead of it (its tenant's waiting ones, and of every other tenant at most one more than that) that do
    not find a free slot go in waves of `slots`, each lasting a sequence's measured time in its slot."""
    mine = waiting.get(tenant, 0) + 1
    ahead = mine + sum(min(count, mine) for other, count in waiting.items() if other != tenant)
    waves = math.ceil(max(0, ahead - free_slots) / max(1, slots))
    return waves * service_seconds


class ReuseEstimate:
    """How many leading tokens of a new prompt recent prompts of the same tenant began with: what automatic
    prefix reuse is likely to spare it, so a row on a warm 1,500-token prefix is not counted as 1,500 tokens
    of prefill. Kept apart from the scheduler's radix index (which belongs to the step thread) as chained
    hashes of whole blocks, bounded, least recent forgotten; an estimate, so a prefix evicted since only
    makes admission a little optimistic. Not thread-safe: `Admission` holds it under its lock."""

    def __init__(self, block: int = REUSE_BLOCK_TOKENS, capacity: int = REUSE_MEMORY_BLOCKS) -> None:
        self.block, self.capacity = block, capacity
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()

    def _chain(self, tenant: str, tokens: Sequence[int]) -> list[tuple[str, int]]:
        keys, previous = [], 0
        for start in range(0, len(tokens) - self.block + 1, self.block):
            previous = hash((previous, tuple(tokens[start:start + self.block])))
            keys.append((tenant, previous))
        return keys

    def reusable(self, tenant: str, tokens: Sequence[int]) -> int:
        """Leading tokens of `tokens` (whole blocks, never the last token) seen before for `tenant`."""
        found = 0
        for key in self._chain(tenant, tokens):
            if key not in self._seen:
                break
            self._seen.move_to_end(key)
            found += self.block
        return min(found, max(0, len(tokens) - 1))

    def remember(self, tenant: str, tokens: Sequence[int]) -> None:
        """`tokens` will be in the KV soon: later prompts may reuse their blocks."""
        for key in self._chain(tenant, tokens):
            self._seen[key] = None
            self._seen.move_to_end(key)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (the KV was reset)."""
        self._seen.clear()


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """`max_delay`: the longest expected time to first token admitted; `max_waiting`: requests one tenant
    may have waiting at once (a bound on memory, whatever the estimate)."""

    max_delay: float
    max_waiting: int
    slots: int = 1


class Admission:
    """The backlog per tenant, the measured prefill rate, and the decision."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._reported_tokens: dict[str, int] = {}  # what the scheduler holds, as of its last step
        self._reported_waiting: Counter[str] = Counter()
        self._submitted_tokens: Counter[str] = Counter()  # admitted, not yet in the scheduler
        self._submitted_waiting: Counter[str] = Counter()
        self.tokens_per_second: float | None = None  # measured; None until a full step ran
        self._decode_step: dict[int, float] = {}  # sequences decoding -> seconds of such a step, measured
        self._reuse = ReuseEstimate()
        self._free_slots = limits.slots

    def to_compute(self, tenant: str, prompt: Sequence[int], reused: int = 0) -> int:
        """Prompt tokens a request is expected to prefill: `prompt` less what it reuses by name (`reused`) or,
        likely, from recent prompts of its tenant."""
        with self._lock:
            likely = self._reuse.reusable(tenant, prompt)
        return max(1, len(prompt) - max(reused, likely))

    def remember(self, tenant: str, prompt: Sequence[int]) -> None:
        """An admitted request's prompt: later ones from its tenant may reuse its prefix."""
        with self._lock:
            self._reuse.remember(tenant, prompt)

    def forget_prompts(self) -> None:
        """The KV was reset: no prefix is there to reuse any more."""
        with self._lock:
            self._reuse.clear()

    def admit(self, tenant: str, prompt_tokens: int, max_tokens: int = 1) -> None:
        """Count the request in, or raise CapacityExceeded with a Retry-After from the backlog. A slot is
        taken to be held for `max_tokens` decode steps of a full engine (requests ahead are like this one)."""
        with self._lock:
            waiting = self._reported_waiting[tenant] + self._submitted_waiting[tenant]
            if waiting >= self.limits.max_waiting:
                raise CapacityExceeded(f"{waiting} of your requests are already waiting; retry shortly",
                                       retry_after=1.0)
            backlog = Counter(self._reported_tokens)
            backlog.update(self._submitted_tokens)
            waiting_now = self._reported_waiting + self._submitted_waiting
            rate = self.tokens_per_second or PRIOR_TOKENS_PER_SECOND
            # What it waits for others: its own prefill is not a queue (a long prompt on an idle server is
            # always admitted, or it could never be served).
            wait = expected_wait(backlog, tenant, prompt_tokens, rate) - prompt_tokens / rate
            service = max_tokens * self._full_step_seconds()
            wait += slot_wait(waiting_now, tenant, self._free_slots, self.limits.slots, service)
            if wait > self.limits.max_delay:
                raise CapacityExceeded(
                    f"the server is busy: this request would wait about {wait:.0f} s before its prompt is "
                    f"computed (the limit is {self.limits.max_delay:.0f} s); retry later",
                    retry_after=float(math.ceil(wait - self.limits.max_delay)))
            self._submitted_tokens[tenant] += prompt_tokens
            self._submitted_waiting[tenant] += 1

    def entered(self, tenant: str, prompt_tokens: int) -> None:
        """An admitted request reached the scheduler (the step thread says so)."""
        with self._lock:
            self._submitted_tokens[tenant] -= prompt_tokens
            self._submitted_waiting[tenant] -= 1
            for counter in (self._submitted_tokens, self._submitted_waiting):
                if counter[tenant] <= 0:
                    del counter[tenant]

    def report(self, tokens: Mapping[str, int], waiting: Mapping[str, int], free_slots: int | None = None) -> None:
        """What the scheduler holds now: prompt tokens still to compute and waiting requests, per tenant, and
        how many sequence slots are free."""
        with self._lock:
            self._reported_tokens = dict(tokens)
            self._reported_waiting = Counter(waiting)
            if free_slots is not None:
                self._free_slots = free_slots

    def observe_step(self, tokens: int, seconds: float, full: bool, sequences: int = 0) -> None:
        """A step computed `tokens` in `seconds` for `sequences` sequences. `full` steps (mostly prefill)
        measure the prefill rate; the others, how long a decode step of that many sequences takes."""
        if seconds <= 0:
            return
        with self._lock:
            if full:
                rate = tokens / seconds
                previous = self.tokens_per_second
                self.tokens_per_second = rate if previous is None else previous + RATE_SMOOTHING * (rate - previous)
            elif sequences > 0:
                previous = self._decode_step.get(sequences)
                self._decode_step[sequences] = (seconds if previous is None
                                                else previous + RATE_SMOOTHING * (seconds - previous))

    def _full_step_seconds(self) -> float:
        """Seconds of a decode step with every slot busy, which is how the requests ahead will be served:
        measured at that many sequences, else scaled linearly from the most sequences measured (too long,
        since a batch costs less per sequence, and so refusing early rather than late), else the prior.
        A rate measured on an idle engine would admit a burst that then waits far past the limit."""
        if not self._decode_step:
            return PRIOR_DECODE_STEP_SECONDS
        most = max(self._decode_step)
        slots = max(1, self.limits.slots)
        if most >= slots:
            return self._decode_step.get(slots, self._decode_step[most])
        return self._decode_step[most] * slots / most
