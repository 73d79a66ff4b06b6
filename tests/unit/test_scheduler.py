"""Scheduler without a model: budgets, chunked prefill, prefix copies, waits, eviction, preemption."""

from __future__ import annotations

import itertools

import pytest

from minimill.engine.plan import SampledToken, StepPlan, StepResult
from minimill.engine.scheduler import Scheduler, SchedulerLimits
from minimill.engine.sequence import Pin, Preload, SeqStatus, Sequence

keys = itertools.count(1)


def seq(tokens: list[int], max_tokens: int = 4, tenant: str = "") -> Sequence:
    return Sequence(key=next(keys), tenant=tenant, tokens=list(tokens), num_prompt=len(tokens),
                    max_tokens=max_tokens)


def step(s: Scheduler, token: int = 7) -> StepPlan:
    """Plan, pretend to decode (every sampled token is `token`), finish what reached max_tokens."""
    plan = s.schedule()
    result = StepResult(tuple(SampledToken(key=i.key, token=token) for i in plan.items if i.sample))
    for advanced in s.update(plan, result):
        if advanced.num_generated >= advanced.max_tokens:
            s.finish(advanced)
    s.check()
    return plan


def test_chunked_prefill_then_decode_within_budget() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=4, step_tokens=32))
    a = seq(list(range(70)), max_tokens=2)
    s.add(a)
    sizes = [[len(i.tokens) for i in step(s).items] for _ in range(4)]
    assert sizes == [[32], [32], [6], [1]]
    assert a.status is SeqStatus.RETAINED and a.tokens[70:] == [7, 7]


def test_prefix_copied_from_retained_sequence_and_counted_as_cached() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=4, step_tokens=64))
    first = seq(list(range(40)), max_tokens=1)
    s.add(first)
    step(s)
    second = seq(list(range(30)) + [99, 98], max_tokens=1)
    s.add(second)
    plan = step(s)
    assert [(c.length) for c in plan.copies] == [30]
    assert plan.items[0].start == 30 and len(plan.items[0].tokens) == 2
    assert second.cached_tokens == 30


def test_identical_prompt_keeps_its_last_token_to_compute() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=4, step_tokens=64))
    s.add(seq(list(range(20)), max_tokens=1))
    step(s)
    again = seq(list(range(20)), max_tokens=1)
    s.add(again)
    plan = step(s)
    assert plan.copies[0].length == 19 and plan.items[0].tokens == (19,)


def test_tenants_never_share_prefixes() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=4, step_tokens=64))
    s.add(seq(list(range(40)), max_tokens=1, tenant="alice"))
    step(s)
    s.add(seq(list(range(40)), max_tokens=1, tenant="bob"))
    assert step(s).copies == ()


def test_request_waits_for_a_running_prefill_instead_of_recomputing() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=1024, max_seqs=4, step_tokens=64))
    prefix = list(range(200))
    a, b = seq(prefix + [1000], max_tokens=1), seq(prefix + [2000], max_tokens=1)
    s.add(a)
    s.add(b)
    computed_by_b = 0
    while b.status is not SeqStatus.RETAINED:
        plan = step(s)
        computed_by_b += sum(len(i.tokens) for i in plan.items if i.key == b.key)
    assert computed_by_b == 1 and b.cached_tokens == 200


def test_lru_retained_prefix_is_evicted_for_a_new_slot() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=2, step_tokens=64))
    old, recent = seq([1, 2, 3], max_tokens=1), seq([4, 5, 6], max_tokens=1)
    for q in (old, recent):
        s.add(q)
        step(s)
    s.add(seq([9, 9, 9], max_tokens=1))
    plan = step(s)
    assert old.status is SeqStatus.FREED and recent.status is SeqStatus.RETAINED
    assert s.counters.evictions == 1 and len(plan.releases) == 1


def test_newest_running_sequence_is_preempted_when_cells_run_out() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=24, max_seqs=4, step_tokens=64, retain_cells=0))
    a, b = seq(list(range(10)), max_tokens=8), seq(list(range(50, 60)), max_tokens=8)
    s.add(a)
    s.add(b)
    plans = []
    for _ in range(30):
        if a.status is SeqStatus.FREED and b.status is SeqStatus.FREED:
            break
        plans.append(step(s))
    assert s.counters.preemptions >= 1 and b.preemptions >= 1 and a.preemptions == 0
    # b's KV went to host memory and came back: nothing of it was computed twice
    assert [w.key for p in plans for w in p.swap_out] == [w.key for p in plans for w in p.swap_in] != []
    assert sum(len(i.tokens) for p in plans for i in p.items if i.key == b.key) == 10 + 7
    assert a.tokens[10:] == [7] * 8 and b.tokens[10:] == [7] * 8
    assert s.cells.used == 0


def test_retention_is_capped_by_the_cells_finished_sequences_alone_hold_least_recent_first() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=8, step_tokens=64, retain_cells=40))
    shared = list(range(20))
    rows = [seq(shared + [100 + i] * 8, max_tokens=1) for i in range(4)]
    for row in rows:
        s.add(row)
        step(s)
    # While row 4 ran, rows 1-3 held 44 cells, but 20 of them were row 4's too: 24 alone, under the cap.
    assert s.counters.evictions == 0 and s.cells.used == 52
    while s.has_work:  # an idle engine trims at once: 20 shared + 8 own per row, two rows fit in 40
        step(s)
    assert [r.status for r in rows].count(SeqStatus.RETAINED) == 2 and rows[3].status is SeqStatus.RETAINED
    assert s.cells.used == 36 and s.counters.evictions == 2 and rows[3].cached_tokens == 20


class Clock:
    """A settable clock for pin expiry."""

    now = 1000.0

    def __call__(self) -> float:
        return self.now


def pinned(tokens: list[int], name: str, until: float, tenant: str = "") -> Sequence:
    made = seq(tokens, max_tokens=1, tenant=tenant)
    made.pin = Pin(name, until)
    return made


def run_until_idle(s: Scheduler) -> None:
    while s.waiting or s.running:
        step(s)


def test_pinned_prefixes_are_evicted_after_every_unpinned_one_and_expire() -> None:
    clock = Clock()
    s = Scheduler(SchedulerLimits(kv_cells=120, max_seqs=8, step_tokens=64, retain_cells=120), clock=clock)
    s.add(pinned(list(range(40)), "cache:a", until=1100.0))
    run_until_idle(s)
    for base in (100, 200):  # two unpinned prefixes fill the rest
        s.add(seq(list(range(base, base + 30)), max_tokens=1))
        run_until_idle(s)
    s.add(seq(list(range(300, 340)), max_tokens=1))  # needs room: the unpinned go first
    run_until_idle(s)
    assert s.pins == {"cache:a": s.pins["cache:a"]} and s.counters.evictions >= 1
    assert all(r.pin is None for slot, r in s.retained.items() if slot != s.pins["cache:a"])
    clock.now = 1200.0  # past the pin: an ordinary prefix now
    s.add(seq(list(range(400, 410)), max_tokens=1))
    run_until_idle(s)
    assert s.pins == {}


def test_preload_loads_bytes_then_the_request_copies_from_them() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=4, step_tokens=64, retain_cells=0))
    request = seq(list(range(50)) + [9, 9], max_tokens=1, tenant="t")
    request.preload = Preload(pin=Pin("cache:x", 2e9), namespace="t", tokens=tuple(range(50)), data=b"kv")
    s.add(request)
    plan = step(s)
    (load,) = plan.loads
    assert load.data == b"kv" and s.pins["cache:x"] == load.slot
    assert [(c.src, c.length) for c in plan.copies] == [(load.slot, 50)]
    assert plan.items[0].start == 50 and request.cached_tokens == 50


def test_a_shared_namespace_is_read_only_by_requests_that_name_it() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=4, step_tokens=64, retain_cells=64))
    s.add(pinned(list(range(40)), "cache:s", until=2e9, tenant="*shared*"))
    run_until_idle(s)
    unnamed = seq(list(range(40)) + [5], max_tokens=1, tenant="bob")
    s.add(unnamed)
    run_until_idle(s)
    named = seq(list(range(40)) + [5], max_tokens=1, tenant="bob")
    named.shared_namespace = "*shared*"
    s.add(named)
    run_until_idle(s)
    assert unnamed.cached_tokens == 0 and named.cached_tokens == 40


def batch_seq(tokens: list[int], max_tokens: int = 4) -> Sequence:
    line = seq(tokens, max_tokens)
    line.batch = True
    return line


def test_batch_steps_are_short_and_pause_while_an_online_request_prefills() -> None:
    now = [100.0]
    s = Scheduler(SchedulerLimits(kv_cells=1024, max_seqs=8, step_tokens=128, batch_step_tokens=16,
                                  batch_idle_step_tokens=48), clock=lambda: now[0])
    line = batch_seq(list(range(300)), max_tokens=50)
    s.add(line)
    assert [len(i.tokens) for i in step(s).items] == [48]  # no online request seen: the idle chunk
    online = seq(list(range(500, 700)), max_tokens=3)
    s.add(online)
    for _ in range(2):  # 200 online prompt tokens in two steps of 128 + 72: the batch line gets nothing
        assert {i.key for i in step(s).items} == {online.key}
    plan = step(s)  # online decodes now; the batch line resumes within the short budget
    assert {i.key: len(i.tokens) for i in plan.items} == {online.key: 1, line.key: 16}
    step(s)
    assert online.num_generated == 3 and not any(not x.batch for x in s.running)
    now[0] += 1.0  # online gone for less than the quiet period: still short steps
    assert [len(i.tokens) for i in step(s).items] == [16]
    now[0] += 1.5
    assert [len(i.tokens) for i in step(s).items] == [48]


def test_online_is_admitted_before_waiting_batch_lines_which_keep_their_share_of_slots() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=1024, max_seqs=4, step_tokens=256, batch_step_tokens=256,
                                  batch_idle_step_tokens=256, batch_max_seqs=2))
    lines = [batch_seq([1000 + 10 * k + t for t in range(10)], max_tokens=20) for k in range(3)]
    for line in lines:
        s.add(line)
    online = seq(list(range(10)), max_tokens=20)
    s.add(online)
    step(s)
    assert online.status is SeqStatus.RUNNING
    step(s)
    assert [line.status for line in lines] == [SeqStatus.RUNNING, SeqStatus.RUNNING, SeqStatus.WAITING]


def test_online_request_preempts_a_batch_line_for_a_slot_and_the_line_resumes() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=1024, max_seqs=2, step_tokens=64, batch_step_tokens=64,
                                  batch_idle_step_tokens=64, batch_max_seqs=2))
    lines = [batch_seq([1000 + 10 * k + t for t in range(10)], max_tokens=6) for k in range(2)]
    for line in lines:
        s.add(line)
    step(s)
    online = seq(list(range(10)), max_tokens=2)
    s.add(online)
    plan = step(s)
    assert [swap.key for swap in plan.swap_out] == [lines[1].key] and online.status is SeqStatus.RUNNING
    while online.status is SeqStatus.RUNNING:
        step(s)
    for _ in range(12):
        step(s)
    assert [len(line.tokens) - line.num_prompt for line in lines] == [6, 6]  # both lines finished
    assert online.num_generated == 2 and not s.running
    assert all(line.status is SeqStatus.FREED for line in lines)  # batch lines are not kept as prefixes


def test_online_request_does_not_wait_on_a_batch_prefill_of_its_prefix() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=1024, max_seqs=4, step_tokens=64, batch_step_tokens=16,
                                  batch_idle_step_tokens=16))
    prefix = list(range(80))
    line = batch_seq(prefix + [900], max_tokens=2)
    s.add(line)
    step(s)
    online = seq(prefix + [901], max_tokens=2)
    s.add(online)
    plan = step(s)
    assert online.status is SeqStatus.RUNNING and {i.key for i in plan.items} == {online.key}
    assert plan.copies[0].length == 16  # it copies what the line has computed, then prefills the rest


def test_rollback_returns_the_cells_of_an_interrupted_step_and_plans_it_again() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=4, step_tokens=32, batch_idle_step_tokens=32))
    line = batch_seq(list(range(50)), max_tokens=2)
    s.add(line)
    plan = s.schedule()
    assert s.cells.used == 32
    s.rollback(plan)  # the decode was cut short: no update
    assert s.cells.used == 0 and line.num_computed == 0
    again = s.schedule()
    assert [(i.start, len(i.tokens)) for i in again.items] == [(0, 32)] and s.cells.used == 32


def test_tenants_take_turns_at_admission_whatever_the_queue_order() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=1024, max_seqs=4, step_tokens=512, retain_cells=0))
    flood = [seq([100 + n, 1, 2], max_tokens=50, tenant="a") for n in range(8)]
    for q in flood:
        s.add(q)
    late = seq([200, 1, 2], max_tokens=50, tenant="b")
    s.add(late)
    step(s)
    # Four slots: tenant b is second in line, not ninth.
    assert {q.tenant for q in s.running} == {"a", "b"} and late.status is SeqStatus.RUNNING
    assert [q for q in flood if q.status is SeqStatus.RUNNING] == flood[:3]


def test_a_tenant_running_every_slot_gives_one_up_to_another() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=1024, max_seqs=4, step_tokens=512, retain_cells=0))
    flood = [seq([100 + n, 1, 2], max_tokens=50, tenant="a") for n in range(6)]
    for q in flood:
        s.add(q)
    step(s)
    assert [q.tenant for q in s.running] == ["a"] * 4
    late = seq([200, 1, 2], max_tokens=50, tenant="b")
    s.add(late)
    step(s)
    assert late.status is SeqStatus.RUNNING
    assert flood[3].swapped and flood[3].status is SeqStatus.WAITING  # a's newest, its KV saved
    for tenant in "cd":  # each newcomer takes a slot from the tenant running the most
        s.add(seq([201, 1, 2], max_tokens=50, tenant=tenant))
        step(s)
    assert sorted(q.tenant for q in s.running) == ["a", "b", "c", "d"]
    # Shares now differ by less than two: nobody else is preempted, the newcomer waits its turn.
    other = seq([202, 1, 2], max_tokens=50, tenant="e")
    s.add(other)
    step(s)
    assert other.status is SeqStatus.WAITING and sorted(q.tenant for q in s.running) == ["a", "b", "c", "d"]


def test_newcomer_tenants_first_step_is_their_own_at_most_one_step_in_four() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=512, max_seqs=8, step_tokens=64))
    flood = [seq([1, 2, 3, i], max_tokens=50, tenant="a") for i in range(4)]
    for a in flood:
        s.add(a)
    step(s)  # a's prompts
    s.add(seq([9, 9, 9, 9, 9], max_tokens=3, tenant="a"))  # a's own newcomer: a runs already, a normal step
    assert {item.key for item in step(s).items} >= {a.key for a in flood}
    b, c = seq([5, 6, 7, 8, 9, 10], max_tokens=3, tenant="b"), seq([4, 4, 4], max_tokens=3, tenant="c")
    s.add(b)
    s.add(c)
    alone = step(s)  # nobody's rows beside theirs
    assert sorted((item.key, len(item.tokens)) for item in alone.items) == [(b.key, 6), (c.key, 3)]
    assert b.num_generated == 1 and c.num_generated == 1  # their first tokens came from their own step
    d = seq([3, 3, 3], max_tokens=3, tenant="d")
    s.add(d)
    for _ in range(3):  # then three steps for everyone: d's prompt is computed beside the decodes
        assert {a.key for a in flood} <= {item.key for item in step(s).items}
    assert d.num_generated >= 1


def test_one_tenant_keeps_its_own_order() -> None:
    from minimill.engine.scheduler import fair_order

    a1, a2, b1, a3, b2 = (seq([n], tenant=t) for n, t in enumerate("aabab"))
    assert fair_order([a1, a2, b1, a3, b2], running=[]) == [a1, b1, a2, b2, a3]
    assert fair_order([a1, a2, b1], running=[seq([9], tenant="a")]) == [b1, a1, a2]
    batch = seq([5], tenant="b")
    batch.batch = True
    assert fair_order([batch, a1], running=[]) == [a1, batch]


def changed_before_copies(plan: StepPlan) -> set[int]:
    """Slots whose KV a plan replaces before its copies run (the runner's order: swap-outs, releases,
    swap-ins, loads, copies, then the batch): a copy from one of them would copy the wrong KV, or none."""
    return set(plan.releases) | {swap.slot for swap in plan.swap_in} | {load.slot for load in plan.loads}


def test_a_slot_copied_from_in_a_step_is_never_evicted_for_another_sequence_in_that_step() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=2, step_tokens=64))
    prefix = list(range(40))
    s.add(seq(prefix, max_tokens=1))
    step(s)  # retained in one slot; the other is free
    reusing, other = seq(prefix + [500, 501], max_tokens=1), seq(list(range(900, 930)), max_tokens=1)
    s.add(reusing)
    s.add(other)
    plan = step(s)
    sources = {copy.src for copy in plan.copies}
    assert not sources & changed_before_copies(plan), plan
    assert len({item.slot for item in plan.items}) == len(plan.items)  # one item per llama.cpp sequence
    if reusing.cached_tokens:  # it copied: its prefix must still be there when the copy runs
        assert sources


def test_a_loaded_prefix_is_not_evicted_in_the_step_that_loads_it() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=2, step_tokens=64))
    tokens = list(range(30))
    named = seq(tokens + [77], max_tokens=1)
    named.preload = Preload(pin=Pin("cache:x", 1e18), namespace="", tokens=tuple(tokens), data=b"kv")
    s.add(named)
    s.add(seq(list(range(900, 930)), max_tokens=1))
    plan = step(s)
    loaded = {load.slot for load in plan.loads}
    assert not loaded & set(plan.releases), plan
    assert not loaded & {item.slot for item in plan.items if item.key != named.key}, plan


def test_a_running_batch_sequence_copied_from_is_not_preempted_in_that_step() -> None:
    s = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=2, step_tokens=64, batch_max_seqs=2))
    prefix = list(range(40))
    donor = seq(prefix + [1], max_tokens=50)
    donor.batch = True
    s.add(donor)
    step(s)  # the batch sequence has its prompt computed and decodes on
    reusing, other = seq(prefix + [500, 501], max_tokens=1), seq(list(range(900, 930)), max_tokens=1)
    s.add(reusing)
    s.add(other)
    plan = step(s)
    sources = {copy.src for copy in plan.copies}
    assert not sources & ({swap.slot for swap in plan.swap_out} | changed_before_copies(plan)), plan


def apply(plan: StepPlan, kv: dict[int, list[int]], saved: dict[int, list[int]],
          owners: dict[int, Sequence]) -> tuple[tuple[int, bytes], ...]:
    """Run `plan` on a model of llama.cpp's KV (each slot's tokens by position), in the runner's order, and
    check that every item extends exactly its own sequence's tokens: the oracle for plans. Returns what the
    plan's spills saved (a slot's tokens, as the bytes its loads read back)."""
    spilled = tuple((spill.key, ",".join(map(str, kv.get(spill.slot, []))).encode()) for spill in plan.spills)
    for swap in plan.swap_out:
        saved[swap.key] = list(kv.get(swap.slot, []))
    for slot in plan.releases:
        kv.pop(slot, None)
    for swap in plan.swap_in:
        assert not kv.get(swap.slot), f"swap into a non-empty slot {swap.slot}"
        kv[swap.slot] = saved.pop(swap.key)
    for load in plan.loads:
        assert not kv.get(load.slot), f"load into a non-empty slot {load.slot}"
        kv[load.slot] = [int(t) for t in load.data.decode().split(",")][: load.keep]
    for slot, length in plan.cuts:
        assert len(kv.get(slot, [])) > length, f"cut of slot {slot} at {length} removes nothing"
        kv[slot] = kv[slot][:length]
    for copy in plan.copies:
        assert not kv.get(copy.dst), f"copy into a non-empty slot {copy.dst}"
        kv[copy.dst] = list(kv.get(copy.src, [])[: copy.length])
        assert len(kv[copy.dst]) == copy.length, f"copy of {copy.length} from slot {copy.src} found less"
    assert len({item.slot for item in plan.items}) == len(plan.items)
    for item in plan.items:
        mine = owners[item.key]
        assert kv.get(item.slot, []) == mine.tokens[: item.start], f"item {item} computes on another's KV"
        kv[item.slot] = kv.get(item.slot, [])[: item.start] + list(item.tokens)
    return spilled


@pytest.mark.parametrize(("seed", "kv_cells", "max_seqs", "step_tokens", "retain_cells", "ram_bytes"), [
    (7, 400, 4, 48, 200, 0), (1, 400, 4, 48, 200, 4000), (2, 200, 2, 16, 0, 4000), (3, 120, 8, 16, 100, 0),
    (4, 120, 8, 48, 200, 1000), (5, 200, 3, 48, 100, 0), (31, 120, 8, 16, 100, 4000), (6, 400, 8, 16, 0, 20000),
])
def test_random_traffic_always_computes_on_its_own_kv(seed: int, kv_cells: int, max_seqs: int, step_tokens: int,
                                                      retain_cells: int, ram_bytes: int) -> None:
    """Online and batch requests sharing prefixes, named prefixes from colder tiers, prefixes saved to RAM and
    loaded back, aborts, drops, under tight cells and slots: every step's plan, run on a model of the KV,
    computes each sequence on its own tokens (a plan that copied from a slot it freed, preempted what it
    planned, or loaded a RAM entry holding other tokens, fails here)."""
    import random

    rng = random.Random(seed)
    s = Scheduler(SchedulerLimits(kv_cells=kv_cells, max_seqs=max_seqs, step_tokens=step_tokens,
                                  retain_cells=retain_cells, retain_ram_bytes=ram_bytes, batch_max_seqs=2))
    kv: dict[int, list[int]] = {}
    saved: dict[int, list[int]] = {}
    owners: dict[int, Sequence] = {}
    prefixes = [list(range(100 * p, 100 * p + 30)) for p in range(3)]
    for _ in range(400):
        for _ in range(rng.choice((0, 0, 1, 2))):
            tokens = rng.choice(prefixes)[: rng.randrange(5, 31)] + [rng.randrange(1000, 2000) for _ in range(3)]
            new = seq(tokens, max_tokens=rng.randrange(1, 12), tenant=rng.choice(("a", "b")))
            new.batch = rng.random() < 0.3
            if rng.random() < 0.15:  # a named prefix arriving from a colder tier (some of them expired)
                cached = tuple(rng.choice(prefixes)[:20])
                new.tokens = list(cached) + new.tokens[-3:]
                new.num_prompt = len(new.tokens)
                new.preload = Preload(pin=Pin(f"cache:{rng.randrange(5)}", 1e18 if rng.random() < 0.8 else 0.0),
                                      namespace=new.tenant, tokens=cached, data=",".join(map(str, cached)).encode())
            owners[new.key] = new
            s.add(new)
        if s.running and rng.random() < 0.05:
            s.abort(rng.choice(s.running))
        if s.waiting and rng.random() < 0.03:
            s.abort(rng.choice(list(s.waiting)))
        if rng.random() < 0.02:
            s.drop_retained()
        if not s.has_work:
            continue
        plan = s.schedule()
        spilled = apply(plan, kv, saved, owners)
        result = StepResult(tuple(SampledToken(key=i.key, token=rng.randrange(3000, 4000))
                                  for i in plan.items if i.sample), spilled=spilled)
        for advanced in s.update(plan, result):
            if advanced.num_generated >= advanced.max_tokens:
                s.finish(advanced)
        s.check()
    assert s.counters.cached_tokens > 0 and s.counters.preemptions > 0  # the paths under test were taken
    if ram_bytes:
        assert s.ram.counters.hits > 0 and s.ram.counters.saved >= s.ram.counters.hits
        assert s.ram.bytes <= ram_bytes


def test_interleaved_chats_find_their_history_in_ram_after_leaving_the_live_kv() -> None:
    """Six chats from a plain client, turn t of each before turn t+1 of any, with no prefix kept live once
    finished: every turn after the first loads its chat's history back from RAM and copies all of it, and
    the plans run on a model of the KV compute each sequence on its own tokens."""
    s = Scheduler(SchedulerLimits(kv_cells=2048, max_seqs=4, step_tokens=64, retain_cells=0,
                                  retain_ram_bytes=1 << 20))
    kv: dict[int, list[int]] = {}
    swapped: dict[int, list[int]] = {}
    owners: dict[int, Sequence] = {}
    histories = {chat: list(range(1000 * chat, 1000 * chat + 40)) for chat in range(1, 7)}  # own system line
    for turn in range(4):
        for chat, history in histories.items():
            new = seq(history + [50 + turn, 60 + chat], max_tokens=5, tenant="alice")
            owners[new.key] = new
            s.add(new)
            while new.status is not SeqStatus.RETAINED and new.status is not SeqStatus.FREED:
                plan = s.schedule()
                spilled = apply(plan, kv, swapped, owners)
                result = StepResult(tuple(SampledToken(key=i.key, token=9) for i in plan.items if i.sample),
                                    spilled=spilled)
                for advanced in s.update(plan, result):
                    if advanced.num_generated >= advanced.max_tokens:
                        s.finish(advanced)
                s.check()
            # its KV holds all but the last sampled token: exactly what the next turn can copy
            assert new.cached_tokens == (0 if turn == 0 else len(history) - 1), (turn, chat)
            histories[chat] = new.tokens
    # every later turn loaded its history from RAM; the last chat's last turn is still live (until next step)
    assert s.ram.counters.hits == 3 * 6 and s.ram.counters.evicted == 0 and len(s.ram) == 5


def test_saved_prefixes_stay_within_their_byte_limit_least_recently_used_first() -> None:
    from minimill.kv.retained import RetainedRam

    ram = RetainedRam(limit_bytes=250)
    keys = []
    for n in range(4):
        key = ram.reserve("t", list(range(100 * n, 100 * n + 40)))
        ram.fill(key, bytes(100))
        keys.append(key)
    assert ram.bytes == 200 and keys[0] not in ram and keys[1] not in ram and keys[3] in ram
    assert ram.best(["t"], list(range(300, 350))) == (keys[3], 40)
    assert ram.best(["u"], list(range(300, 350))) is None  # another tenant's prefixes never match
    longer = ram.reserve("t", list(range(300, 345)))  # the same chat, one turn on: the shorter entry goes
    ram.fill(longer, bytes(120))
    assert keys[3] not in ram and longer in ram and ram.bytes == 220
    shorter = ram.reserve("t", list(range(300, 330)))  # a prefix of what is held adds nothing
    ram.fill(shorter, bytes(50))
    assert shorter not in ram and ram.bytes == 220
    pending = ram.reserve("t", list(range(900, 950)))
    assert ram.best(["t"], list(range(900, 950))) is None  # not matched before its bytes are saved
    ram.discard(pending)
    assert pending not in ram


def test_a_finished_prefix_copied_in_part_is_saved_whole_and_cut_before_the_copy() -> None:
    """Its tail would leave the live KV anyway (`retain_cells` 0): cut in the copying step, before the copy
    and the copier's own tokens (which then fill its cells in position order), the whole saved to RAM first."""
    s = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=4, step_tokens=64, retain_cells=0, retain_ram_bytes=1 << 20))
    kv: dict[int, list[int]] = {}
    owners: dict[int, Sequence] = {}
    first = seq(list(range(40)), max_tokens=1)
    second = seq(list(range(30)) + [99, 98], max_tokens=1)
    owners.update({first.key: first, second.key: second})
    s.add(first)
    plan = s.schedule()
    result = StepResult(tuple(SampledToken(key=i.key, token=7) for i in plan.items if i.sample),
                        spilled=apply(plan, kv, {}, owners))
    for advanced in s.update(plan, result):
        s.finish(advanced)  # retained with its 40 prompt tokens computed; no step since to evict it
    s.add(second)
    plan = s.schedule()
    (spill,) = plan.spills
    assert plan.cuts == ((spill.slot, 30),) and [(c.src, c.length) for c in plan.copies] == [(spill.slot, 30)]
    s.update(plan, StepResult((), spilled=apply(plan, kv, {}, owners)))
    assert kv[spill.slot] == list(range(30)) and s.cells.used == 32  # shared 30 + second's own 2
    saved = s.ram.best([""], list(range(40)))
    assert saved is not None and saved[1] == 40 and s.ram.index.tokens_of(saved[0]) == tuple(range(40))
    s.check()


def test_a_pinned_prefix_loaded_and_copied_in_part_is_cut_after_its_load_and_stays_pinned() -> None:
    """A named cache's tier copy holds its prompt and answer; a query shares only the prompt. The answer's
    cells would leave the live KV anyway (`retain_cells` 0), so they are cut after the load, before the copy
    (nothing saved: the tier copy is whole), and the name still points at the live part."""
    s = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=4, step_tokens=64, retain_cells=0, retain_ram_bytes=1 << 20))
    kv: dict[int, list[int]] = {}
    stored = list(range(30)) + [500, 501, 502]  # the prompt, then the answer it was kept with
    query = seq(list(range(30)) + [99, 98], max_tokens=1)
    query.preload = Preload(pin=Pin("cache:x", 1e18), namespace="", tokens=tuple(stored),
                            data=",".join(map(str, stored)).encode())
    s.add(query)
    plan = s.schedule()
    (load,) = plan.loads
    assert not plan.spills and plan.cuts == ((load.slot, 30),)
    assert [(c.src, c.length) for c in plan.copies] == [(load.slot, 30)]
    s.update(plan, StepResult((), spilled=apply(plan, kv, {}, {query.key: query})))
    assert kv[load.slot] == list(range(30)) and s.cells.used == 32
    assert s.pins == {"cache:x": load.slot} and s.retained[load.slot].tokens == list(range(30))
    s.check()


def run_step(s: Scheduler, kv: dict[int, list[int]], swapped: dict[int, list[int]],
             owners: dict[int, Sequence]) -> StepPlan:
    """Plan, run the plan on the KV model (spills filled in RAM, swaps kept in `swapped`), sample 7 for every
    item, finish what is done."""
    plan = s.schedule()
    result = StepResult(tuple(SampledToken(key=i.key, token=7) for i in plan.items if i.sample),
                        spilled=apply(plan, kv, swapped, owners))
    for advanced in s.update(plan, result):
        if advanced.num_generated >= advanced.max_tokens:
            s.finish(advanced)
    s.check()
    return plan


def test_rows_after_one_prefix_are_saved_to_ram_once_not_once_each() -> None:
    """W1's shape: rows after one long instruction, one at a time, nothing kept live past its step
    (`retain_cells` 0). Each row copies the instruction from the row before, whose own tail then leaves the live
    KV; saving every such row whole would fill RAM with copies of one instruction. One is kept (it holds the
    instruction), and every row still reuses the whole instruction; a chat's next turn (which extends what
    was saved) is still saved."""
    s = Scheduler(SchedulerLimits(kv_cells=1024, max_seqs=4, step_tokens=256, retain_cells=0,
                                  retain_ram_bytes=1 << 20))
    kv: dict[int, list[int]] = {}
    owners: dict[int, Sequence] = {}
    instruction = list(range(100, 200))
    rows = []
    for row in range(6):
        new = seq(instruction + [1000 + row, 2000 + row], max_tokens=2)
        owners[new.key] = new
        s.add(new)
        while new.status is not SeqStatus.RETAINED:
            run_step(s, kv, {}, owners)
        rows.append(new)
    assert [r.cached_tokens for r in rows] == [0] + [len(instruction)] * 5
    assert s.ram.counters.saved == 1 and len(s.ram) == 1
    s.drop_retained()  # everything live leaves (to RAM where worth it): the instruction is held once still
    if s.has_work:
        run_step(s, kv, {}, owners)
    assert s.ram.best([""], instruction + [1]) is not None
    assert s.ram.counters.saved == 1
    turn = seq(rows[-1].tokens + [3000, 3001], max_tokens=2)  # the last row's chat goes on: not a sibling
    owners[turn.key] = turn
    s.add(turn)
    while turn.status is not SeqStatus.RETAINED:
        run_step(s, kv, {}, owners)
    assert turn.cached_tokens >= len(instruction)


def test_with_every_running_slot_taken_a_prefix_saved_in_ram_still_loads_into_a_holder_slot() -> None:
    """B's earlier chat is in RAM; A runs on every slot. B's next turn preempts one of A's sequences for its
    own slot, and loads its history into a holder slot to copy it, instead of recomputing it."""
    cached = {}
    for holders in (2, 0):
        s = Scheduler(SchedulerLimits(kv_cells=1024, max_seqs=2, step_tokens=64, retain_cells=0,
                                      retain_ram_bytes=1 << 20, holder_slots=holders))
        kv: dict[int, list[int]] = {}
        swapped: dict[int, list[int]] = {}
        first = seq(list(range(40)), max_tokens=1, tenant="b")
        flood = [seq(list(range(500 + 10 * i, 510 + 10 * i)), max_tokens=50, tenant="a") for i in range(3)]
        turn = seq(list(range(40)) + [7, 90, 91, 92], max_tokens=1, tenant="b")
        owners = {q.key: q for q in [first, turn, *flood]}
        s.add(first)
        run_step(s, kv, swapped, owners)
        run_step(s, kv, swapped, owners)  # the finished chat leaves the live KV for RAM
        assert s.ram.best(["b"], turn.tokens) is not None
        for q in flood:
            s.add(q)
        run_step(s, kv, swapped, owners)
        assert len(s.running) == 2 and all(q.tenant == "a" for q in s.running)
        s.add(turn)
        for _ in range(3):
            run_step(s, kv, swapped, owners)
        cached[holders] = turn.cached_tokens
    assert cached == {2: 40, 0: 0}  # all of the earlier chat's computed tokens, or nothing
