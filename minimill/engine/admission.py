"""Admission by expected wait: a request is refused (429) when its time to first token would exceed the
limit, not when a fixed number of requests are queued, and its wait is counted as the fair scheduler will
serve it (`scheduler.fair_order`): its tenant's own backlog, plus at most as much of each other tenant's.

The engine's step thread reports the backlog (prompt tokens still to prefill, per tenant) and how fast
steps compute; callers on any thread ask `admit`. Thread-safe.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from minimill.errors import CapacityExceeded

RATE_SMOOTHING = 0.2  # weight of the newest step in the throughput average


def expected_wait(backlog: Mapping[str, int], tenant: str, prompt_tokens: int, tokens_per_second: float) -> float:
    """Seconds until a request of `prompt_tokens` from `tenant` has its prompt computed, when tenants take
    turns: all of its tenant's backlog and its own prompt, and of every other tenant at most that much."""
    mine = backlog.get(tenant, 0) + prompt_tokens
    ahead = mine + sum(min(tokens, mine) for other, tokens in backlog.items() if other != tenant)
    return ahead / tokens_per_second


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """`max_delay`: the longest expected time to first token admitted; `max_waiting`: requests one tenant
    may have waiting at once (a bound on memory, whatever the estimate)."""

    max_delay: float
    max_waiting: int


class Admission:
    """The backlog per tenant, the measured prefill rate, and the decision."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._reported_tokens: dict[str, int] = {}  # what the scheduler holds, as of its last step
        self._reported_waiting: Counter[str] = Counter()
        self._submitted_tokens: Counter[str] = Counter()  # admitted, not yet in the scheduler
        self._submitted_waiting: Counter[str] = Counter()
        self.tokens_per_second: float | None = None

    def admit(self, tenant: str, prompt_tokens: int) -> None:
        """Count the request in, or raise CapacityExceeded with a Retry-After from the backlog."""
        with self._lock:
            waiting = self._reported_waiting[tenant] + self._submitted_waiting[tenant]
            if waiting >= self.limits.max_waiting:
                raise CapacityExceeded(f"{waiting} of your requests are already waiting; retry shortly",
                                       retry_after=1.0)
            if self.tokens_per_second is not None:
                backlog = Counter(self._reported_tokens)
                backlog.update(self._submitted_tokens)
                wait = expected_wait(backlog, tenant, prompt_tokens, self.tokens_per_second)
                if wait > self.limits.max_delay:
                    raise CapacityExceeded(
                        f"the server is busy: this request would wait about {wait:.0f} s for its first token "
                        f"(the limit is {self.limits.max_delay:.0f} s); retry later",
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

    def report(self, tokens: Mapping[str, int], waiting: Mapping[str, int]) -> None:
        """What the scheduler holds now: prompt tokens still to compute and waiting requests, per tenant."""
        with self._lock:
            self._reported_tokens = dict(tokens)
            self._reported_waiting = Counter(waiting)

    def observe_step(self, tokens: int, seconds: float, full: bool) -> None:
        """A step computed `tokens` in `seconds`; only `full` steps (mostly prefill) measure the rate."""
        if not full or seconds <= 0:
            return
        rate = tokens / seconds
        with self._lock:
            previous = self.tokens_per_second
            self.tokens_per_second = rate if previous is None else previous + RATE_SMOOTHING * (rate - previous)
