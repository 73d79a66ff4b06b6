"""What an engine reports: its load (`EngineStats`) and Prometheus metrics after each step, and the online
backlog that admission decides on."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

from minimill.engine.scheduler import Scheduler, SchedulerCounters
from minimill.kv.prefix_disk import PrefixDisk
from minimill.kv.tiers import TierStore
from minimill.metrics import Metrics

RATE_WINDOW_SECONDS = 5.0  # tokens/s is averaged over this much of the recent past


def online_backlog(scheduler: Scheduler) -> tuple[Counter[str], Counter[str], int]:
    """The online work `scheduler` holds: prompt tokens still to compute (less the prefix a waiting one will
    likely copy) and waiting requests, per tenant, and how many online sequences run (batch work is not
    counted: it yields to online requests)."""
    tokens: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    for seq in scheduler.waiting:
        if not seq.batch:
            tokens[seq.tenant] += max(0, seq.num_prompt - max(seq.num_computed, seq.expected_reuse))
            waiting[seq.tenant] += 1
    for seq in scheduler.running:
        if not seq.batch and seq.in_prefill:
            tokens[seq.tenant] += seq.num_prompt - seq.num_computed
    return tokens, waiting, sum(not seq.batch for seq in scheduler.running)


class StepRecorder:
    """Publishes one engine's scheduler and tier state to its metrics after each step (engine thread only):
    gauges are set, counters advance by what changed since the last step, tokens/s is a moving window."""

    def __init__(self, name: str, metrics: Metrics, kv_total: int) -> None:
        self.name = name
        self.metrics = metrics
        self.kv_total = kv_total
        self.kv_bytes_per_cell = 0.0  # measured from the last saved KV; sizes the live tier
        self.live_hits = 0  # named KV found still live (the tiers count their own hits)
        self._reported = SchedulerCounters()
        self._window: list[tuple[float, int]] = []
        metrics.kv_total.labels(name).set(kv_total)

    def record(self, scheduler: Scheduler, tiers: TierStore, computed: int, sampled: int,
               prefixes: PrefixDisk | None = None) -> None:
        """After a step that computed `computed` tokens and sampled `sampled`."""
        m, name, s = self.metrics, self.name, scheduler
        m.queue_length.labels(name).set(len(s.waiting))
        m.running.labels(name).set(len(s.running))
        m.retained.labels(name).set(len(s.retained))
        m.kv_used.labels(name).set(s.cells.used)
        m.kv_usage.labels(name).set(s.cells.used / self.kv_total)
        m.computed_tokens.labels(name).inc(computed)
        m.generated_tokens.labels(name).inc(sampled)
        c, seen = s.counters, self._reported
        m.prompt_tokens.labels(name).inc(c.prompt_tokens - seen.prompt_tokens)
        m.cached_tokens.labels(name).inc(c.cached_tokens - seen.cached_tokens)
        m.preemptions.labels(name).inc(c.preemptions - seen.preemptions)
        m.evictions.labels(name).inc(c.evictions - seen.evictions)
        m.decode_steps.labels(name).inc(c.steps - seen.steps)
        m.step_kv_cells.labels(name).inc(c.step_cells - seen.step_cells)
        self._reported = replace(c)
        if c.prompt_tokens:
            m.prefix_hit_rate.labels(name).set(c.cached_tokens / c.prompt_tokens)
        self._record_tiers(scheduler, tiers)
        if prefixes is not None:
            m.disk_prefix_saves.labels(name).set(prefixes.counters.saved)
            m.disk_prefix_hits.labels(name).set(prefixes.counters.hits)
            m.disk_prefix_bytes.labels(name).set(prefixes.bytes())
        now = time.monotonic()
        self._window.append((now, sampled))
        self._window = [(t, n) for t, n in self._window if now - t <= RATE_WINDOW_SECONDS]
        span = now - self._window[0][0]
        if span > 0:
            m.tokens_per_second.labels(name).set(sum(n for _, n in self._window) / span)

    def _record_tiers(self, scheduler: Scheduler, tiers: TierStore) -> None:
        m, name, t = self.metrics, self.name, tiers
        pinned_cells = sum(scheduler.cells.length(slot) for slot in scheduler.pins.values())
        m.tier_bytes.labels(name, "live").set(pinned_cells * self.kv_bytes_per_cell)
        for tier in ("ram", "disk"):
            m.tier_bytes.labels(name, tier).set(t.bytes_in(tier))
            m.tier_hits.labels(name, tier).set(t.counters.hits[tier])
            m.tier_evictions.labels(name, tier).set(t.counters.evictions[tier])
        m.tier_misses.labels(name).set(t.counters.misses)
        ram, saved = scheduler.ram, scheduler.ram.counters
        m.saved_prefixes.labels(name).set(len(ram))
        m.saved_prefix_bytes.labels(name).set(ram.bytes)
        m.saved_prefix_saves.labels(name).set(saved.saved)
        m.saved_prefix_hits.labels(name).set(saved.hits)
        m.saved_prefix_hit_tokens.labels(name).set(saved.hit_tokens)
        m.saved_prefix_evictions.labels(name).set(saved.evicted)
        hits = {"live": self.live_hits, **t.counters.hits}
        lookups = sum(hits.values()) + t.counters.misses
        for tier_name, count in hits.items():
            m.tier_hit_rate.labels(name, tier_name).set(count / lookups if lookups else 0.0)
        m.tier_corrupt.labels(name).set(t.counters.corrupt)
        m.tier_write_errors.labels(name).set(t.counters.write_errors)
        m.disk_tier_enabled.labels(name).set(1 if t.disk_enabled else 0)
