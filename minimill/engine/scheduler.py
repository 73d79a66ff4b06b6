"""Pure-Python scheduler: admission, token budget, chunked prefill, prefix reuse, preemption.

Each step hands out `step_tokens`: one token to every running sequence in decode, then chunks of
prefill, then new admissions, which start with `num_computed` = the longest usable prefix copied
from a live or retained sequence of the same tenant. KV cells are counted with `KVCells`, which
mirrors llama.cpp's unified cache, so the plan never asks for cells that are not there; when they
run out, retained prefixes are evicted (LRU) and then the newest running sequence is preempted: its
KV is swapped out to host memory and swapped back in when there is room. An evicted prefix long enough
to matter is saved to RAM (`RetainedRam`) instead of dropped, and loaded back into a slot when a later
prompt of its tenant shares more with it than with anything live: a plain client resending its chat's
history finds it however many other chats went between.
Batch sequences (Batch API lines) yield to online ones: they get no tokens in a step where an
online request waits or prefills, at most `batch_step_tokens` a step while online requests are
about (`batch_idle_step_tokens` once none has been seen for a while), at most
`batch_max_seqs` slots, are the first preempted when an online request needs room, and are not
retained once finished (their group's prefix is pinned instead).
Pinned prefixes (prompt caches, chat sessions) are retained under a name until they expire; their
bytes are already in a colder tier (the engine saves them at finish), so under pressure they are
evicted after every unpinned prefix, and a later request loads them back (`Preload`).
The scheduler never calls llama.cpp: it returns a `StepPlan` and learns the outcome in `update`.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from minimill.engine.plan import Load, PlanItem, PrefixCopy, StepPlan, StepResult, Swap
from minimill.engine.sequence import Preload, SeqStatus, Sequence
from minimill.engine.speculation import StepCost
from minimill.kv.cells import KVCells
from minimill.kv.radix import RadixIndex
from minimill.kv.retained import RetainedRam

# A new request waits for a running prefill instead of recomputing when that prefill will give it
# at least this many more reusable tokens than it can copy now: waiting costs a step or two,
# recomputing costs every shared token again.
MIN_WAIT_GAIN = 1
# A prefix saved in RAM is loaded back only when it gives at least this many more reusable tokens than the
# best live prefix: a load takes a slot and a memory copy of the whole prefix.
MIN_LOAD_GAIN = 16
# Batch steps stay short until no online request has been seen for this long.
ONLINE_QUIET_SECONDS = 2.0
# At most one step in this many is newcomers' own (`Scheduler._newcomers`): running sequences keep at least
# three decode steps of four however many tenants keep arriving.
NEWCOMER_EVERY = 4
# A finished prefix is not saved to RAM when another holder shares this much of it and then differs: it would
# hold the shared part twice (see `_save_to_ram`).
SIBLING_SHARE = 0.9


@dataclass(frozen=True, slots=True)
class SchedulerLimits:
    """Capacity the scheduler plans within."""

    kv_cells: int
    max_seqs: int
    step_tokens: int
    retain_cells: int = 4096
    retain_ram_bytes: int = 0  # evicted prefixes kept in RAM up to this many bytes (0: dropped)
    batch_step_tokens: int = 8
    batch_idle_step_tokens: int = 128
    batch_max_seqs: int | None = None  # None: an eighth of max_seqs
    # llama.cpp sequences beyond `max_seqs` for finished prefixes and prefixes loaded back from RAM: with every
    # running slot taken (a preempted one is the newcomer's), a prompt can still load its prefix and copy it.
    holder_slots: int = 0

    @property
    def slots(self) -> int:
        """llama.cpp sequences in all: running ones and holders of finished or loaded prefixes."""
        return self.max_seqs + self.holder_slots

    @property
    def batch_seqs(self) -> int:
        """How many sequences batch work may run at once."""
        return self.batch_max_seqs if self.batch_max_seqs is not None else max(1, self.max_seqs // 8)


@dataclass(slots=True)
class SchedulerCounters:
    """Monotonic counters for metrics."""

    preemptions: int = 0
    evictions: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    steps: int = 0  # steps planned with tokens to decode
    step_cells: int = 0  # used KV cells at each of them, summed: what their attention spanned


@dataclass(frozen=True, slots=True)
class _Source:
    """The sequence to copy a prefix from (None: nothing to copy) and how many tokens of it."""

    holder: int | None
    usable: int


def fair_order(queue: Iterable[Sequence], running: Iterable[Sequence]) -> list[Sequence]:
    """`queue` in the order tenants should be served: online before batch; within each, tenants take turns,
    the tenant running fewest sequences first, each tenant's sequences in their own order (a preempted one
    was put first). One tenant's flood so never holds back another tenant's request."""
    load = Counter(s.tenant for s in running)
    ordered: list[Sequence] = []
    for batch in (False, True):
        by_tenant: dict[str, list[Sequence]] = {}
        for seq in queue:
            if seq.batch == batch:
                by_tenant.setdefault(seq.tenant, []).append(seq)
        turns = sorted(by_tenant, key=lambda tenant: load[tenant])  # stable: first-come tenants first on a tie
        for rank in range(max((len(q) for q in by_tenant.values()), default=0)):
            ordered.extend(by_tenant[t][rank] for t in turns if rank < len(by_tenant[t]))
    return ordered


def _holds_or_sibling(index: RadixIndex, namespace: str, tokens: list[int]) -> bool:
    """Whether a holder in `index` holds all of `tokens`, or is a sibling: shares at least SIBLING_SHARE of them
    and then goes on differently (one that `tokens` extend is an earlier turn of the same chat, not a sibling)."""
    return any(shared >= len(tokens) or SIBLING_SHARE * len(tokens) <= shared < len(index.tokens_of(holder))
               for holder, shared in index.match(namespace, tokens).items())


class Scheduler:
    """Decides each step's work. Mutates only its own queues, the cell model and the prefix index."""

    def __init__(self, limits: SchedulerLimits, clock: Callable[[], float] = time.time,
                 below_ram: Callable[[str, tuple[int, ...], bytes], None] | None = None) -> None:
        self.limits = limits
        self._now = clock
        self.counters = SchedulerCounters()
        self.ram = RetainedRam(limits.retain_ram_bytes, evicted=below_ram)  # `below_ram`: the disk for its evictions
        self.step_cost = StepCost()  # what a row of a decode step costs: how long drafts may be
        self.draft_row_seconds = 0.0  # what a draft model's token costs to make (measured by the engine's)
        self._clear()

    def _clear(self) -> None:
        limits = self.limits
        self.cells = KVCells(limits.kv_cells)
        self.index = RadixIndex()
        self.ram.clear()
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.retained: OrderedDict[int, Sequence] = OrderedDict()  # slot -> seq, least recent first
        self.free_slots: list[int] = list(range(limits.slots - 1, -1, -1))
        self._slots: dict[int, Sequence] = {}
        self._releases: list[int] = []
        self._spills: list[Swap] = []
        self._cuts: list[tuple[int, int]] = []
        self._swap_out: list[Swap] = []
        self._swap_in: list[Swap] = []
        self._loads: list[Load] = []
        # Slots the plan being made copies from or loads into: their KV must stay as it is until the copies
        # run (the runner frees slots before it copies), so nothing evicts them this step.
        self._in_use: set[int] = set()
        self.pins: dict[str, int] = {}  # pinned name -> retained slot holding it
        self._online_seen = float("-inf")  # when an online sequence was last waiting or running
        self._since_newcomers = NEWCOMER_EVERY  # steps planned since the last newcomers' own (`_newcomers`)

    # ---- queue operations -------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        """Queue a new sequence at the back."""
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def finish(self, seq: Sequence) -> None:
        """A running sequence is done: keep its KV as a reusable prefix (pinned if it has a pin), or free it."""
        self.running.remove(seq)
        # Kept live, or (past `retain_cells`, even 0) evicted from there to RAM at the next step.
        keep = seq.pin is not None or (not seq.batch and (self.limits.retain_cells > 0
                                                          or self.ram.wants(seq.num_computed)))
        if keep and seq.num_computed > 0 and seq.slot is not None:
            seq.status = SeqStatus.RETAINED
            self.retained[seq.slot] = seq
            self.index.insert(seq.tenant, seq.slot, seq.tokens[: seq.num_computed])
            if seq.pin is not None:
                self.unpin(seq.pin.name)  # an earlier turn of the session: now an ordinary prefix
                self.pins[seq.pin.name] = seq.slot
        else:
            self._free(seq)

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence wherever it is; its KV is freed at the next step."""
        if seq.status is SeqStatus.WAITING:
            self.waiting.remove(seq)
            seq.status = SeqStatus.FREED
        elif seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
            self._free(seq)

    def unpin(self, name: str, evict: bool = False) -> None:
        """Stop pinning `name`; its KV stays as an ordinary prefix, or is freed if `evict`."""
        slot = self.pins.pop(name, None)
        if slot is None:
            return
        holder = self.retained[slot]
        holder.pin = None
        if evict:
            del self.retained[slot]
            self._free(holder)

    def drop_retained(self) -> None:
        """Free every finished prefix from the live KV; pinned ones remain in their colder tiers, others are
        saved to RAM (when long enough)."""
        while self._evict_one(protect=()):
            pass

    def _enforce_retain_cap(self, protect: tuple[int, ...]) -> None:
        """Attention in a unified KV spans every used cell, so the cells finished sequences hold alone stay
        live only up to the cap: unpinned ones leave first (saved to RAM when long enough); pinned ones past it
        move down to RAM (already saved there).
        Run after admissions, so a prefix finished last step can still be copied (`protect`: this
        step's copy sources, which are released only after the copy)."""
        while self._retained_only_cells() > self.limits.retain_cells and self._evict_one(protect, must_free=True):
            pass

    def _retained_only_cells(self) -> int:
        """Cells held by finished prefixes and by no running sequence: what retention adds to every step's
        attention (cells a running sequence shares cost that step anyway)."""
        if self.cells.used <= self.limits.retain_cells:  # under the cap whatever the answer: skip the count
            return self.cells.used
        return self.cells.used - self.cells.held_by([s.slot for s in self.running if s.slot is not None])

    def _expire_pins(self) -> None:
        """An expired pin becomes an ordinary retained prefix (its KV may still be reused)."""
        now = self._now()
        expired = [n for n, slot in self.pins.items() if self.retained[slot].pin.expires_at <= now]  # type: ignore[union-attr]
        for name in expired:
            self.unpin(name)

    def reset(self) -> list[Sequence]:
        """Forget all state after an engine failure; returns the sequences that were live."""
        live = list(self.waiting) + self.running
        self._clear()
        return live

    @property
    def has_work(self) -> bool:
        """Whether a step would do anything."""
        return bool(self.waiting or self.running or self._releases or self._spills or self._swap_out
                    or self._loads) or self._over_retain_cap()

    def _over_retain_cap(self) -> bool:
        """Finished prefixes hold more than `retain_cells` and one of them can leave: an idle engine trims the
        live KV (saving to RAM) at once, not in the first step of the next request."""
        if self._retained_only_cells() <= self.limits.retain_cells:
            return False
        return any(self.cells.cells_freed_by_release(slot) for slot in self.retained if slot not in self._in_use)

    # ---- planning -----------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        """Plan one step. Mutates queues, cells and index as if the plan succeeds."""
        self._expire_pins()
        self._rebalance()
        budget = self.limits.step_tokens
        batch_budget = self._batch_budget()
        items: list[PlanItem] = []
        copies: list[PrefixCopy] = []
        newcomers = self._newcomers()
        self._since_newcomers = 0 if newcomers else self._since_newcomers + 1
        if newcomers:  # their own step: their prompts only, nobody's decode or prefill beside them
            budget = sum(seq.pending for seq in newcomers)
            batch_budget = 0
        self._make_room(len(self._decoders(batch_budget, budget, bool(newcomers))), protect=())
        # Decodes first (one token each, cells reserved above; making room may have preempted some),
        # then prefill chunks with what is left.
        decoders = self._decoders(batch_budget, budget, bool(newcomers))
        rows = len(decoders)  # the decode step's rows, drafts included as they are chosen
        batch_later = sum(s.batch for s in decoders)
        weighed = self.step_cost.fresh(rows)  # else this step goes without drafts and measures its cost anew
        for n, seq in enumerate(decoders):
            later = len(decoders) - n - 1  # each still needs its token and its cell
            batch_later -= seq.batch
            draft = self._draft(seq, rows, len(decoders), budget - 1 - later, self.cells.free - 1 - later,
                                batch_budget - 1 - batch_later if seq.batch else budget) if weighed else ()
            rows += len(draft)
            items.append(self._plan_tokens(seq, 1, draft))
            budget -= 1 + len(draft)
            batch_budget -= (1 + len(draft)) * seq.batch
        for seq in fair_order([s for s in self.running if s.in_prefill and not newcomers], self.running):
            count = min(seq.pending, budget, batch_budget if seq.batch else budget)
            self._make_room(count, protect=(), preempt=False, batch_victims=not seq.batch)
            count = min(count, self.cells.free)
            if count > 0:
                items.append(self._plan_tokens(seq, count))
                budget -= count
                batch_budget -= count if seq.batch else 0
        budget = self._admit(budget, batch_budget, items, copies)
        self._enforce_retain_cap(protect=tuple(copy.src for copy in copies))
        if not items and newcomers:  # no room for them after all: an ordinary step instead (none follows at once)
            return self.schedule()
        if not items and self.running:
            # Every running prefill is stuck on cells held by younger sequences: free the newest (batch first).
            self._preempt(self._victim(any_running=True) or self.running[-1])
            return self.schedule()
        if items:
            self.counters.steps += 1
            self.counters.step_cells += self.cells.used
        plan = StepPlan(spills=tuple(self._spills), swap_out=tuple(self._swap_out), releases=tuple(self._releases),
                        swap_in=tuple(self._swap_in), loads=tuple(self._loads), cuts=tuple(self._cuts),
                        copies=tuple(copies), items=tuple(items))
        self._spills.clear()
        self._cuts.clear()
        self._swap_out.clear()
        self._releases.clear()
        self._swap_in.clear()
        self._loads.clear()
        self._in_use.clear()
        assert budget >= 0 and len({item.key for item in items}) == len(items)
        # A sequence may be swapped out (a rebalance) and back in (an admission) in one step: the runner saves
        # every swap-out before it restores any swap-in. Planned and only swapped out would lose its KV.
        assert {item.key for item in plan.items} & {swap.key for swap in plan.swap_out} <= {
            swap.key for swap in plan.swap_in}, "planned, then preempted"
        return plan

    def _batch_budget(self) -> int:
        """Tokens batch work may take this step. None while an online request waits or prefills (its first
        token is not held up by batch tokens in its step); short steps while online requests are about (one
        arriving mid-step waits little); longer ones once none has been seen for `ONLINE_QUIET_SECONDS`."""
        now = self._now()
        online_waiting = any(not s.batch for s in self.waiting)
        if online_waiting or any(not s.batch for s in self.running):
            self._online_seen = now
        if online_waiting or any(not s.batch and s.in_prefill for s in self.running):
            return 0
        if now - self._online_seen < ONLINE_QUIET_SECONDS:
            return self.limits.batch_step_tokens
        return max(self.limits.batch_step_tokens, self.limits.batch_idle_step_tokens)

    def _decoders(self, batch_budget: int, budget: int, newcomers: bool = False) -> list[Sequence]:
        """The running sequences that decode this step: online all, batch within its budget; none in newcomers'
        own step."""
        if newcomers:
            return []
        online = [s for s in self.running if not s.in_prefill and not s.batch]
        batch = [s for s in self.running if not s.in_prefill and s.batch][:max(0, batch_budget)]
        return (online + batch)[:budget]

    def _newcomers(self) -> list[Sequence]:
        """New online requests of tenants running nothing (one each), whose prompts fit in one step with a slot
        free for each: their first step is their own, so their first tokens wait for no other tenant's decode
        rows (under one tenant's flood, another's first token waits for the step in progress and then a step of
        its own size). At most one step in NEWCOMER_EVERY: running sequences keep the others."""
        if self._since_newcomers < NEWCOMER_EVERY - 1 or not self.running:
            return []
        busy = {s.tenant for s in self.running if not s.batch}
        chosen: list[Sequence] = []
        room, slots = self.limits.step_tokens, self.limits.max_seqs - len(self.running)
        for seq in fair_order(self.waiting, self.running):
            if seq.batch or len(chosen) == slots:
                break  # online requests come first: none is left
            if (not seq.swapped and not seq.admitted_once and seq.preload is None and seq.tenant not in busy
                    and seq.pending <= room):
                chosen.append(seq)
                busy.add(seq.tenant)
                room -= seq.pending
        return chosen

    def _plan_tokens(self, seq: Sequence, count: int, draft: tuple[int, ...] = ()) -> PlanItem:
        assert seq.slot is not None
        start = seq.num_computed
        self.cells.append(seq.slot, count + len(draft))
        targets: tuple[int, ...] = ()
        if seq.score_prompt and start < seq.num_prompt:
            targets = tuple(seq.tokens[p + 1] if p + 1 < seq.num_prompt else -1 for p in range(start, start + count))
        return PlanItem(key=seq.key, slot=seq.slot, start=start,
                        tokens=(*seq.tokens[start:start + count], *draft), sample=start + count == len(seq.tokens),
                        targets=targets, drafted=len(draft))

    def _draft(self, seq: Sequence, rows: int, sequences: int, budget: int, cells: int,
               batch_budget: int) -> tuple[int, ...]:
        """A decoding sequence's speculative draft: as long as pays in a step of `rows` rows for `sequences`
        sequences (`StepCost.best_length`), within what the step leaves it (`budget` tokens, `cells` free cells,
        `batch_budget` for batch work), its max_tokens and the context."""
        if seq.drafter is None:
            return ()
        room = min(budget, cells, batch_budget, seq.max_tokens - seq.num_generated - 1,
                   self.limits.kv_cells - len(seq.tokens))
        if room <= 0:
            return ()
        extra = self.draft_row_seconds if seq.drafter.params.model else 0.0
        return seq.drafter.propose(seq.tokens, seq.num_prompt, room,
                                   lambda alpha, most: self.step_cost.best_length(alpha, rows, sequences, most, extra))

    def trim(self, seq: Sequence, length: int) -> None:
        """A running sequence stopped inside tokens a draft gave it: keep its first `length` tokens, and KV for
        all but the last (the caller drops the llama seq's positions from `seq.num_computed` on)."""
        assert seq.slot is not None and 0 < length <= len(seq.tokens)
        del seq.tokens[length:]
        seq.num_computed = min(seq.num_computed, length - 1)
        self.cells.truncate(seq.slot, seq.num_computed)

    def _admit(self, budget: int, batch_budget: int, items: list[PlanItem], copies: list[PrefixCopy]) -> int:
        # Online requests first; within each class tenants take turns (fair_order).
        for seq in fair_order(self.waiting, self.running):
            allowed = min(budget, batch_budget) if seq.batch else budget
            if allowed <= 0:
                break
            if seq.batch and sum(s.batch for s in self.running) >= self.limits.batch_seqs:
                break
            if len(self.running) >= self.limits.max_seqs:
                victim = None if seq.batch else self._victim(any_running=False)
                if victim is None:
                    break
                self._preempt(victim)
            if seq.swapped:
                if not self._resume(seq):
                    break
                # Room was made for its KV and one token: a sequence swapped out mid-prefill may want more.
                count = min(seq.pending, allowed, self.cells.free)
                if count <= 0:
                    continue
                items.append(self._plan_tokens(seq, count))
                budget -= count
                batch_budget -= count if seq.batch else 0
                continue
            if seq.preload is not None:
                self._load(seq.preload)
                seq.preload = None  # one try: without room, the prefix is recomputed
            source = self._best_source(seq)
            if source is None:
                continue  # a running prefill will soon give this request a longer prefix
            protect = (source.holder,) if source.holder is not None else ()
            slot = self._take_slot(protect)
            if slot is None and not seq.batch and (victim := self._victim(any_running=False, protect=protect)):
                self._preempt(victim)
                slot = self._take_slot(protect)
            if slot is None:
                break
            count = min(seq.pending - source.usable, allowed)
            if not self._make_room(count + len(self.running), protect=protect, preempt=False,
                                   batch_victims=not seq.batch):
                self.free_slots.append(slot)
                break
            self._start(seq, slot, source, copies)
            items.append(self._plan_tokens(seq, count))
            budget -= count
            batch_budget -= count if seq.batch else 0
        return budget

    def _resume(self, seq: Sequence) -> bool:
        """Give a swapped-out sequence a slot and cells for its saved KV; False if there is no room."""
        slot = self._take_slot(protect=())
        if slot is None:
            return False
        if not self._make_room(seq.num_computed + 1 + len(self.running), protect=(), preempt=False):
            self.free_slots.append(slot)
            return False
        self.waiting.remove(seq)
        seq.slot, seq.status, seq.swapped = slot, SeqStatus.RUNNING, False
        self._slots[slot] = seq
        self.cells.append(slot, seq.num_computed)
        self._swap_in.append(Swap(key=seq.key, slot=slot))
        self.index.insert(seq.tenant, slot, seq.tokens[: seq.num_prompt])
        self.running.append(seq)
        return True

    def _load(self, preload: Preload) -> None:
        """Put a colder tier's KV into a fresh slot as a pinned, retained prefix (unless it is live)."""
        if preload.pin.name in self.pins:
            return
        slot = self._take_slot(protect=())
        if slot is None:
            return
        length = len(preload.tokens)
        if not self._make_room(length + len(self.running) + 1, protect=(), preempt=False):
            self.free_slots.append(slot)
            return
        holder = Sequence(key=-1, tenant=preload.namespace, tokens=list(preload.tokens), num_prompt=length,
                          max_tokens=0, num_computed=length, slot=slot, status=SeqStatus.RETAINED,
                          pin=preload.pin)
        self._retain_loaded(holder, preload.data)
        self.pins[preload.pin.name] = slot

    def _retain_loaded(self, holder: Sequence, data: bytes, keep: int | None = None) -> None:
        """Plan loading `data` (its first `keep` positions) into the holder's fresh slot and index it as a
        retained prefix, kept this step."""
        assert holder.slot is not None
        self._slots[holder.slot] = holder
        self.cells.append(holder.slot, holder.num_computed)
        self.retained[holder.slot] = holder
        self.index.insert(holder.tenant, holder.slot, holder.tokens)
        self._in_use.add(holder.slot)
        self._loads.append(Load(slot=holder.slot, data=data, keep=keep))

    def _best_source(self, seq: Sequence) -> _Source | None:
        """Longest prefix this sequence can copy now, or None if waiting for a prefill pays more."""
        limit = len(seq.tokens) - 1  # the last token is always computed, for its logits
        best = _Source(holder=None, usable=0)
        if seq.score_prompt:  # every position's logits are wanted: nothing may be copied
            return best
        promised = 0
        matches = self.index.match(seq.tenant, seq.tokens)
        if seq.shared_namespace is not None:
            matches.update(self.index.match(seq.shared_namespace, seq.tokens))
        for holder, shared in matches.items():
            owner = self._slots[holder]
            usable = min(shared, owner.num_computed, limit)
            if usable > best.usable:
                best = _Source(holder=holder, usable=usable)
            # An online request never waits on a batch prefill: batch work is paused while it waits.
            if owner.status is SeqStatus.RUNNING and owner.in_prefill and (seq.batch or not owner.batch):
                promised = max(promised, min(shared, limit))
        if promised - best.usable >= MIN_WAIT_GAIN:
            return None
        namespaces = [seq.tenant] if seq.shared_namespace is None else [seq.tenant, seq.shared_namespace]
        saved = self.ram.best(namespaces, seq.tokens)
        if saved is not None and min(saved[1], limit) - best.usable >= MIN_LOAD_GAIN:
            loaded = self._load_saved(saved[0], min(saved[1], limit),
                                      protect=(best.holder,) if best.holder is not None else ())
            if loaded is not None:
                return _Source(holder=loaded, usable=min(saved[1], limit))
        return best

    def _load_saved(self, key: int, used: int, protect: tuple[int, ...]) -> int | None:
        """Bring a prefix saved in RAM back into a fresh slot as a retained prefix; its slot, or None without
        room (the prompt then copies from `protect`, the best live prefix, kept for it, or recomputes)."""
        slot = self._take_slot(protect)
        if slot is None:
            return None
        # Only the part the prompt uses is kept: past it the entry holds an answer as the model generated it,
        # which the resent history (re-tokenized) no longer follows; kept, it would be saved again as a twin.
        # The whole entry is restored before it is cut, so room is made for all of it.
        length = len(self.ram.index.tokens_of(key))
        if not self._make_room(length + len(self.running) + 1, protect=protect, preempt=False):
            self.free_slots.append(slot)
            return None
        entry = self.ram.take(key, used)
        assert entry.data is not None
        holder = Sequence(key=-1, tenant=entry.namespace, tokens=list(entry.tokens[:used]), num_prompt=used,
                          max_tokens=0, num_computed=used, slot=slot, status=SeqStatus.RETAINED)
        self._retain_loaded(holder, entry.data, keep=used if used < len(entry.tokens) else None)
        return slot

    def _start(self, seq: Sequence, slot: int, source: _Source, copies: list[PrefixCopy]) -> None:
        self.waiting.remove(seq)
        seq.slot = slot
        seq.status = SeqStatus.RUNNING
        seq.num_computed = source.usable
        self._slots[slot] = seq
        if source.holder is not None:
            holder = self.retained.get(source.holder)
            copied = any(copy.src == source.holder for copy in copies)  # this step: its cells must stay
            if holder is not None and not copied and self._tail_leaves(holder, source.usable):
                self._cut(holder, source.usable)
            self._in_use.add(source.holder)
            copies.append(PrefixCopy(src=source.holder, dst=slot, length=source.usable))
            self.cells.copy_prefix(source.holder, slot, source.usable)
            if source.holder in self.retained:
                self.retained.move_to_end(source.holder)
        if not seq.admitted_once:
            seq.admitted_once = True
            seq.cached_tokens = source.usable
            self.counters.prompt_tokens += seq.num_prompt
            self.counters.cached_tokens += source.usable
        self.index.insert(seq.tenant, slot, seq.tokens[: seq.num_prompt])
        self.running.append(seq)

    def _tail_leaves(self, holder: Sequence, usable: int) -> bool:
        """Whether a finished prefix copied for only `usable` of its tokens would lose the rest under
        `retain_cells` anyway (the copy makes the shared part cost nothing): an unpinned one to RAM, a pinned
        one to its tier copy, which holds all of it."""
        tail = holder.num_computed - usable
        kept_elsewhere = holder.pin is not None or self.ram.wants(holder.num_computed)
        return tail > 0 and kept_elsewhere and self._retained_only_cells() - usable > self.limits.retain_cells

    def _cut(self, holder: Sequence, length: int) -> None:
        """Keep live only a finished prefix's first `length` tokens (an unpinned one saved whole to RAM first),
        cut before this step's copies and decode. Its tail cells are then free before the copier places its own
        tokens, which fill them in position order. Evicted later instead, the tail would leave a hole among the
        copier's cells, refilled by later tokens out of order; llama.cpp's attention sums over cells in cell
        order, so a greedy near-tie could flip against a run that copied nothing. A pinned prefix stays pinned:
        its tier copy is whole, and a later request naming it copies the live part or loads the copy."""
        assert holder.slot is not None
        # Saved by slot before this step's loads: so never one loaded this step (a prefix from RAM is loaded cut
        # to what its prompt uses, and one a copy already used this step is not cut).
        assert holder.pin is not None or holder.slot not in self._in_use, "an unpinned prefix loaded this step"
        self.index.remove(holder.slot)
        if holder.pin is None:
            self._save_to_ram(holder, holder.slot)
        holder.tokens = holder.tokens[:length]
        holder.num_computed = length
        holder.num_prompt = min(holder.num_prompt, length)
        self.cells.truncate(holder.slot, length)
        self.index.insert(holder.tenant, holder.slot, holder.tokens)
        self._cuts.append((holder.slot, length))
        self.counters.evictions += 1  # its tail left the live KV

    # ---- capacity -----------------------------------------------------------------------------
    def _make_room(self, cells: int, protect: tuple[int, ...], preempt: bool = True,
                   batch_victims: bool = False) -> bool:
        """Evict retained prefixes (LRU), then preempt (batch sequences first, then the newest running
        if `preempt`; only batch ones if `batch_victims`), until `cells` are free."""
        while self.cells.free < cells:
            if self._evict_one(protect):
                continue
            victim = self._victim(any_running=preempt, protect=protect) if preempt or batch_victims else None
            if victim is None:
                return self.cells.free >= cells
            self._preempt(victim)
        return True

    def _victim(self, any_running: bool, protect: tuple[int, ...] = ()) -> Sequence | None:
        """Whom to preempt: the newest batch sequence; else, if `any_running`, the newest of several."""
        spared = set(protect) | self._in_use  # a sequence copied from this step keeps its KV until the copy
        batch = [s for s in self.running if s.batch and s.slot not in spared]
        if batch:
            return batch[-1]
        if any_running and len(self.running) > 1 and self.running[-1].slot not in spared:
            return self.running[-1]
        return None

    def _rebalance(self) -> None:
        """Every slot runs and a tenant waits that runs at least two fewer sequences than the tenant running
        the most: preempt that tenant's newest online sequence (its KV saved), so the waiting one can start.
        Done before a step is planned (a planned sequence must not lose its KV), one sequence a step, and
        only past a difference of two, so shares converge without sequences changing places back and forth."""
        if len(self.running) < self.limits.max_seqs:
            return
        running = Counter(s.tenant for s in self.running if not s.batch)
        waiting = {s.tenant for s in self.waiting if not s.batch}
        if not running or not waiting:
            return
        heaviest, count = running.most_common(1)[0]
        if count >= min(running[tenant] for tenant in waiting) + 2:
            self._preempt(next(s for s in reversed(self.running) if s.tenant == heaviest and not s.batch))

    def _take_slot(self, protect: tuple[int, ...]) -> int | None:
        if not self.free_slots:
            self._evict_one(protect)
        return self.free_slots.pop() if self.free_slots else None

    def _evict_one(self, protect: tuple[int, ...], must_free: bool = False) -> bool:
        """Free the least recently used retained prefix (one that frees cells, if `must_free`).

        Unpinned and expired prefixes go first; a pinned one only when nothing else is left (its
        bytes are in a colder tier, so it moves down rather than disappears).
        """
        now = self._now()
        for pinned_pass in (False, True):
            for slot, seq in self.retained.items():
                pinned = seq.pin is not None and seq.pin.expires_at > now
                if pinned != pinned_pass or slot in protect or slot in self._in_use:
                    continue
                if must_free and not self.cells.cells_freed_by_release(slot):
                    continue
                del self.retained[slot]
                had_pin = seq.pin is not None  # then its bytes are in the tier store already
                if seq.pin is not None:
                    del self.pins[seq.pin.name]
                    seq.pin = None
                self._free(seq)
                if not had_pin:
                    self._save_to_ram(seq, slot)
                self.counters.evictions += 1
                return True
        return False

    def _save_to_ram(self, seq: Sequence, slot: int) -> None:
        """Plan saving a just-evicted prefix (freed from `slot`, whose KV stays until the runner saved it) to
        RAM, unless it is short or a live prefix (saved when it leaves) or a saved one holds all its tokens."""
        tokens = seq.tokens[: seq.num_computed]
        if not self.ram.wants(len(tokens)):
            return
        # Not when a live prefix or a saved one (e.g. what a cut left of a prefix saved whole) holds all of it.
        # Nor when a sibling, live or saved, shares nearly all of it and then differs (W1: another row after the
        # same 1,570-token instruction): that keeps the prefix already, and a copy would hold it again for a few
        # tokens of its own, until RAM held copies of one prefix. The tail is recomputed if ever resent.
        if _holds_or_sibling(self.index, seq.tenant, tokens) or _holds_or_sibling(self.ram.index, seq.tenant, tokens):
            return
        self._spills.append(Swap(key=self.ram.reserve(seq.tenant, tokens), slot=slot))

    def _preempt(self, seq: Sequence) -> None:
        """Save a running sequence's KV to host memory, free its cells and queue it first.

        It resumes by loading those bytes: recomputing instead would batch the tokens differently
        and could flip a near-tie, so a resumed sequence would not continue as it would have.
        """
        assert seq.slot is not None
        self._swap_out.append(Swap(key=seq.key, slot=seq.slot))
        self.running.remove(seq)
        self._free(seq)
        seq.status = SeqStatus.WAITING
        seq.swapped = True
        seq.preemptions += 1
        self.counters.preemptions += 1
        self.waiting.appendleft(seq)

    def _free(self, seq: Sequence) -> None:
        slot = seq.slot
        seq.status = SeqStatus.FREED
        seq.slot = None
        if slot is None:
            return
        self.cells.release(slot)
        if slot in self.index:
            self.index.remove(slot)
        del self._slots[slot]
        self._releases.append(slot)
        self.free_slots.append(slot)

    # ---- outcome ------------------------------------------------------------------------------
    def rollback(self, plan: StepPlan) -> None:
        """The plan's decode was interrupted: its tokens have no KV (llama.cpp removed them), so the
        cells they took are returned and they are planned again. Frees, copies, swaps and loads stand."""
        for item in plan.items:
            self.cells.truncate(item.slot, item.start)
        for spill in plan.spills:  # the runner's saved bytes were lost with the step
            self.ram.discard(spill.key)

    def update(self, plan: StepPlan, result: StepResult) -> list[Sequence]:
        """Record computed tokens and sampled ones; returns the sequences that got a new token."""
        for key, data in result.spilled:
            self.ram.fill(key, data)
        by_key = {s.key: s for s in self.running}
        gained = Counter(sampled.key for sampled in result.sampled)
        for item in plan.items:
            seq = by_key.get(item.key)
            if seq is None:
                continue
            # Of a draft, the tokens the samples kept have KV; the rest's cells go back (the runner removed them).
            kept = max(0, gained[item.key] - 1) if item.drafted else 0
            seq.num_computed = item.start + len(item.tokens) - item.drafted + kept
            if item.drafted:
                assert seq.slot is not None and seq.drafter is not None
                self.cells.truncate(seq.slot, seq.num_computed)
                seq.drafter.record(item.drafted, kept)
        advanced: dict[int, Sequence] = {}
        for sampled in result.sampled:
            seq = by_key.get(sampled.key)
            if seq is not None:
                seq.tokens.append(sampled.token)
                advanced[seq.key] = seq
        return list(advanced.values())

    def check(self) -> None:
        """Assert invariants: slots partition, cells agree with sequences, index holds only owners."""
        owners = {s.slot for s in self.running} | set(self.retained)
        assert None not in owners
        assert owners.isdisjoint(self.free_slots), "a slot is both owned and free"
        assert len(owners) + len(self.free_slots) == self.limits.slots, "slots leaked"
        assert set(self._slots) == owners
        for seq in self.running:
            assert seq.slot is not None and self.cells.length(seq.slot) == seq.num_computed
        for name, slot in self.pins.items():
            holder = self.retained[slot]
            assert holder.pin is not None and holder.pin.name == name, "pin index disagrees"
        self.cells.check()
        self.index.check()
        self.ram.index.check()
