"""Speculation without a model: prompt-lookup and prediction drafts, how long a draft is, the step-cost floor,
the verify rule (and that it leaves the sampled distribution unchanged), and the scheduler's plan and update."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minimill.engine.plan import SampledToken, StepResult
from minimill.engine.scheduler import Scheduler, SchedulerLimits
from minimill.engine.sequence import SeqStatus, Sequence
from minimill.engine.speculation import (
    PRIOR_DRAFT,
    REST_STEPS,
    STALE_STEPS,
    Drafter,
    NgramIndex,
    PredictionCursor,
    Speculation,
    StepCost,
    verify,
)
from minimill.kv.radix import common_length


def test_ngram_index_finds_what_followed_the_latest_earlier_occurrence() -> None:
    index = NgramIndex([5, 6, 7, 8, 1, 6, 7, 9, 2, 6, 7])
    assert index.continuation([2, 6, 7], 3) == (9, 2, 6)  # "6 7" last seen before "9": the latest occurrence wins
    assert index.continuation([6, 7, 8], 3, min_n=2) == (1, 6, 7)  # the longest suffix first: "6 7 8"
    assert index.continuation([42, 43], 3, min_n=2) == ()
    assert index.continuation([3, 7], 4) == (9, 2, 6, 7)  # only "7" matches at n=1
    assert index.continuation([3, 7], 4, min_n=2) == ()
    index.extend([9])
    assert index.continuation([6, 7, 9], 2) == (2, 6)


def test_prediction_cursor_follows_resyncs_and_counts() -> None:
    cursor = PredictionCursor((10, 11, 12, 13, 14, 15, 16))
    assert cursor.draft([], 3) == (10, 11, 12)
    assert cursor.draft([10, 11], 2) == (12, 13)
    assert cursor.followed == 2
    # A detour: 99 is not predicted; the cursor is lost, then found again by the output's last token.
    assert cursor.draft([10, 11, 99], 2) == ()
    assert cursor.draft([10, 11, 99, 13], 2) == (14, 15)
    assert cursor.followed == 2  # 13 came after a detour: found again, not followed
    cursor.follow([10, 11, 99, 13, 14, 15])
    assert cursor.followed == 4


def test_a_drafters_acceptance_rises_with_kept_tokens_and_falls_with_misses_and_it_rests() -> None:
    drafter = Drafter.start(Speculation(ngram=True, max_draft=8))
    assert drafter.alpha == pytest.approx(0.5)
    asked: list[tuple[float, int]] = []

    def two(alpha: float, most: int) -> int:
        asked.append((alpha, most))
        return 2

    assert drafter.propose([1, 2, 3, 4, 5, 1, 2], 5, room=6, length=two) == (3, 4)
    assert asked == [(0.5, 6)]  # the room and max_draft bound what the cost model may ask for
    drafter.record(2, 2)
    for _ in range(5):
        drafter.last_source = "ngram"
        drafter.record(4, 4)
    assert drafter.alpha > 0.9
    assert drafter.drafted == {"ngram": 22} and drafter.accepted == {"ngram": 22}
    drafter.unkeep(3)  # the choice stopped before three of the last draft's kept tokens
    assert drafter.accepted == {"ngram": 19}
    for _ in range(10):
        drafter.last_source = "ngram"
        drafter.record(3, 0)
    assert drafter.alpha < 0.2
    # Not worth it: one token as a probe, then a rest.
    assert len(drafter.propose([1, 2, 3, 4, 5, 1, 2], 5, room=8, length=lambda a, m: 0)) == 1
    assert all(drafter.propose([1, 2, 3, 4, 5, 1, 2], 5, room=8) == () for _ in range(REST_STEPS))
    # Still not worth it: a rest twice as long, and so on; a probe that pays ends the backoff.
    assert len(drafter.propose([1, 2, 3, 4, 5, 1, 2], 5, room=8, length=lambda a, m: 0)) == 1
    assert drafter.rest == 2 * REST_STEPS
    drafter.rest = 0
    assert drafter.propose([1, 2, 3, 4, 5, 1, 2], 5, room=8) == (3, 4, 5, 1, 2)  # no cost model: all it can
    assert drafter.backoff == 0
    assert drafter.propose([1, 2, 3, 4, 5, 1, 2], 5, room=0) == ()


def test_a_prediction_is_drafted_before_the_context() -> None:
    drafter = Drafter.start(Speculation(ngram=True, max_draft=4, prediction=(7, 8, 9)))
    assert drafter.propose([1, 2, 7, 8, 5, 7], 5, room=4) == (8, 9)
    assert drafter.last_source == "prediction"
    assert drafter.propose([1, 2, 7, 8, 5, 7, 3, 1, 2], 5, room=4) == (7, 8, 5, 7)  # lost: the context's turn
    assert drafter.last_source == "ngram"


# Seconds of a decode step by its rows, as measured for Qwen2.5-Coder-0.5B on two cores of this host: a row costs
# nearly a token, and from 9 rows llama.cpp's CPU kernels cost more per row still.
CPU = {1: 0.024, 2: 0.044, 3: 0.0545, 5: 0.081, 9: 0.295}


def test_step_cost_interpolates_and_extrapolates_what_it_measured() -> None:
    cost = StepCost()
    assert cost.time(4) is None and cost.best_length(0.9, 1, 1, 8) == PRIOR_DRAFT
    for rows, seconds in CPU.items():
        cost.observe(rows, seconds)
    assert cost.time(3) == pytest.approx(0.0545)
    assert cost.time(4) == pytest.approx((0.0545 + 0.081) / 2)
    assert cost.time(18) == pytest.approx(0.295 + 9 * (0.295 - 0.081) / 4)  # past the largest: the last slope
    flat = StepCost()
    flat.observe(4, 0.010)
    assert flat.time(8) == pytest.approx(0.020)  # one size: its cost per row
    flat.observe(8, 0.010)
    assert flat.time(32) == pytest.approx(0.010)  # a GPU's flat cost: longer steps are tried, then measured
    cost.observe(3, 0.0645)
    assert cost.time(3) == pytest.approx(0.0545 + 0.2 * 0.01)  # a moving average


def test_step_cost_drafts_what_pays_here_and_everything_where_rows_are_free() -> None:
    cpu = StepCost()
    for rows, seconds in CPU.items():
        cpu.observe(rows, seconds)
    assert cpu.best_length(0.9, 1, 1, 8) == 4  # 5 rows; the 9-row kernels would cost more than they save
    assert cpu.best_length(0.6, 1, 1, 8) == 0  # a row costs more than a 60% chance of a token saves
    assert cpu.best_length(0.99, 1, 1, 2) == 2  # never more than asked
    gpu = StepCost()
    for rows in (1, 2, 4, 8, 16, 32):
        gpu.observe(rows, 0.010)
    assert gpu.best_length(0.5, 8, 8, 8) == 8
    assert gpu.best_length(0.0, 8, 8, 8) == 0
    # A draft model's token costs time to make: a 1 ms draft row still pays at 90% (a token saves 1.25 ms), a
    # 3 ms one does not; a drafter whose model rows cost more than they save stops.
    assert gpu.best_length(0.9, 8, 8, 8, extra=0.001) > 0
    assert gpu.best_length(0.9, 8, 8, 8, extra=0.003) < gpu.best_length(0.9, 8, 8, 8, extra=0.001)
    assert gpu.best_length(0.5, 8, 8, 8, extra=0.002) == 0


def test_a_drafter_uses_the_draft_model_guess_after_a_prediction_and_prompt_lookup() -> None:
    drafter = Drafter.start(Speculation(ngram=True, max_draft=4, model=True))
    assert drafter.wants_model()
    drafter.ahead = (40, 41, 42, 43)
    assert drafter.propose([1, 2, 3], 3, room=2) == (40, 41)  # nothing to look up: the model's, cut to the room
    assert drafter.last_source == "draft"
    drafter.ahead = (50,)
    assert drafter.propose([1, 2, 3, 7, 8, 9, 7, 8], 3, room=4) == (9, 7, 8)  # what followed "7 8" comes first
    assert drafter.last_source == "ngram"
    drafter.ahead = ()
    drafter.record(drafted=3, accepted=0)
    assert drafter.propose([1, 2, 3, 7, 8, 9, 7, 8, 5], 3, room=4, length=lambda alpha, most: 0) == ()
    assert drafter.rest > 0 and not drafter.wants_model()  # drafts that do not pay: it rests, the model too


def test_a_step_size_not_measured_lately_is_stale_until_measured_again() -> None:
    cost = StepCost()
    assert cost.fresh(1) and not cost.measured(1)  # nothing to refresh yet
    cost.observe(1, 0.145)  # measured while the KV was crowded
    for _ in range(STALE_STEPS):
        cost.observe(2, 0.090)  # every later step drafted one token: only two-row steps were seen
    assert cost.measured(1) and not cost.fresh(1) and cost.fresh(2)
    cost.observe(1, 0.036)  # a step without drafts measures it again
    assert cost.fresh(1)


def test_verify_keeps_the_draft_while_the_samples_agree() -> None:
    draws = iter([4, 5, 9, 1])
    assert verify((4, 5, 6), lambda i: next(draws)) == [4, 5, 9]
    assert verify((4, 5), lambda i: (4, 5, 7)[i]) == [4, 5, 7]  # all kept, and one more
    assert verify((), lambda i: 3) == [3]


def test_verify_leaves_the_sampled_distribution_unchanged() -> None:
    """Draws at each position come from that position's distribution; with a draft proposing token 1 (likely)
    and then token 0 (unlikely), the first two output tokens must still be distributed as p0 and p1."""
    rng = np.random.default_rng(7)
    p0 = np.array([0.1, 0.5, 0.2, 0.15, 0.05])
    p1 = np.array([0.05, 0.3, 0.3, 0.25, 0.1])
    first = np.zeros(5)
    second = np.zeros(5)
    trials = 20_000
    for _ in range(trials):
        out = verify((1, 0), lambda i: int(rng.choice(5, p=(p0, p1, p1)[i])))
        first[out[0]] += 1
        if out[0] == 1:  # the second token exists whenever the first was the draft's
            second[out[1]] += 1
    # Pearson's chi-square with 4 degrees of freedom: 18.47 is the 0.999 quantile.
    assert float(((first - trials * p0) ** 2 / (trials * p0)).sum()) < 18.47
    kept = second.sum()
    assert float(((second - kept * p1) ** 2 / (kept * p1)).sum()) < 18.47


def decoding(scheduler: Scheduler, prompt: list[int], drafter: Drafter | None, max_tokens: int = 32) -> Sequence:
    """A sequence admitted, prefilled and given its first token, now decoding; rows cost nothing here, so a draft
    is as long as the rest allows."""
    for rows in (1, 64):
        scheduler.step_cost.observe(rows, 0.010)
    seq = Sequence(key=1, tenant="t", tokens=list(prompt), num_prompt=len(prompt), max_tokens=max_tokens,
                   drafter=drafter)
    scheduler.add(seq)
    while seq.in_prefill:
        plan = scheduler.schedule()
        sampled = tuple(SampledToken(key=1, token=prompt[2]) for item in plan.items if item.sample)
        scheduler.update(plan, StepResult(sampled=sampled))
    assert seq.status is SeqStatus.RUNNING and seq.pending == 1 and seq.tokens[-1] == prompt[2]
    return seq


def test_the_scheduler_plans_a_draft_and_keeps_what_was_accepted() -> None:
    scheduler = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=4, step_tokens=64, retain_cells=0))
    prompt = [11, 12, 13, 14, 15, 16, 11, 12]
    seq = decoding(scheduler, prompt, Drafter.start(Speculation(ngram=True, max_draft=4)))
    # Tokens so far end "11 12 13": the context saw "14 15 16 11" after that.
    plan = scheduler.schedule()
    (item,) = plan.items
    assert item.tokens == (13, 14, 15, 16, 11) and item.drafted == 4 and item.start == len(prompt)
    assert scheduler.cells.length(seq.slot or 0) == len(prompt) + 5
    # The samples kept 14 and 15, then drew 99: three tokens, KV for the last token and the two kept.
    advanced = scheduler.update(plan, StepResult(sampled=tuple(SampledToken(key=1, token=t) for t in (14, 15, 99))))
    assert advanced == [seq]
    assert seq.tokens == [*prompt, 13, 14, 15, 99]
    assert seq.num_computed == len(prompt) + 3 and seq.pending == 1
    assert scheduler.cells.length(seq.slot or 0) == seq.num_computed
    assert seq.drafter is not None and seq.drafter.accepted == {"ngram": 2} and seq.drafter.drafted == {"ngram": 4}
    scheduler.check()
    # A choice that stopped at the first of those tokens keeps nothing after it.
    scheduler.trim(seq, len(prompt) + 2)
    assert seq.tokens == [*prompt, 13, 14] and seq.num_computed == len(prompt) + 1
    scheduler.check()


def test_a_draft_never_passes_max_tokens_or_the_budget() -> None:
    scheduler = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=4, step_tokens=16, retain_cells=0))
    prompt = [11, 12, 13, 14, 15, 16, 17, 18, 19, 11, 12]
    decoding(scheduler, prompt, Drafter.start(Speculation(ngram=True, max_draft=8)), max_tokens=3)
    (item,) = scheduler.schedule().items
    assert item.drafted == 1  # 1 generated, this step's token and one draft make max_tokens
    crowded = Scheduler(SchedulerLimits(kv_cells=256, max_seqs=4, step_tokens=16, retain_cells=0))
    long = [*range(100, 130), 100, 101]
    decoding(crowded, long, Drafter.start(Speculation(ngram=True, max_draft=32)), max_tokens=64)
    plan = crowded.schedule()
    assert plan.num_tokens == 16 and plan.items[0].drafted == 15  # the step's budget, not the 30 it could copy


@given(st.lists(st.integers(0, 3), max_size=40), st.lists(st.integers(0, 3), max_size=40))
def test_common_length_is_the_length_of_the_common_start(a: list[int], b: list[int]) -> None:
    naive = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    assert common_length(a, b) == naive == common_length(b, a) == common_length(tuple(a), b)
    assert common_length(a, a + b) == len(a)
