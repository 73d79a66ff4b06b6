"""Admission by expected wait, counted as the fair scheduler serves tenants."""

from __future__ import annotations

import pytest

from minimill.engine.admission import Admission, AdmissionLimits, expected_wait
from minimill.errors import CapacityExceeded


def test_expected_wait_counts_other_tenants_only_up_to_ones_own_share() -> None:
    backlog = {"flood": 100_000, "b": 0}
    assert expected_wait(backlog, "b", 100, tokens_per_second=1000) == pytest.approx(0.2)  # 100 mine + 100 of flood
    assert expected_wait(backlog, "flood", 100, tokens_per_second=1000) == pytest.approx(100.1)
    assert expected_wait({}, "c", 500, tokens_per_second=1000) == pytest.approx(0.5)


def test_a_flooding_tenant_is_refused_with_a_retry_after_while_another_is_admitted() -> None:
    admission = Admission(AdmissionLimits(max_delay=2.0, max_waiting=1000, slots=64))
    admission.observe_step(500, 1.0, full=True)  # 500 tokens/s
    admission.observe_step(10, 1.0, full=False)  # a decode step does not measure the prefill rate
    assert admission.tokens_per_second == 500
    admission.observe_step(64, 0.001, full=False, sequences=64)  # 1 ms a full decode step: slot waits negligible
    for _ in range(6):
        admission.admit("flood", 200)  # up to 1,000 tokens ahead of it: 2 s of waiting for others
    with pytest.raises(CapacityExceeded) as refused:
        admission.admit("flood", 200)  # 1,200 tokens ahead: 2.4 s > 2 s
    assert refused.value.retry_after == 1.0
    admission.admit("b", 200)  # 200 of the flood's ahead of it (turns): 0.4 s
    admission.entered("flood", 200)
    admission.report({"flood": 600}, {"flood": 3})  # the scheduler now holds what was submitted
    admission.admit("b", 100)


def test_a_tenant_may_not_queue_more_than_its_limit() -> None:
    admission = Admission(AdmissionLimits(max_delay=1e9, max_waiting=2))
    admission.admit("a", 1)
    admission.admit("a", 1)
    with pytest.raises(CapacityExceeded):
        admission.admit("a", 1)
    admission.admit("b", 1)  # another tenant's queue is its own
    admission.entered("a", 1)
    admission.report({}, {})
    admission.admit("a", 1)


def test_slot_waits_count_waves_of_requests_ahead() -> None:
    from minimill.engine.admission import slot_wait

    assert slot_wait({}, "b", free_slots=1, slots=8, service_seconds=3.0) == 0.0
    assert slot_wait({"a": 40}, "b", free_slots=0, slots=8, service_seconds=3.0) == 3.0  # b and 1 of a's: one wave
    assert slot_wait({"a": 40}, "a", free_slots=0, slots=8, service_seconds=3.0) == 18.0  # 41 ahead: six waves


def test_a_long_prompt_on_an_idle_server_is_always_admitted() -> None:
    admission = Admission(AdmissionLimits(max_delay=2.0, max_waiting=1000, slots=4))
    admission.observe_step(500, 1.0, full=True)
    admission.admit("a", 100_000)  # 200 s of its own prefill, but nothing to wait for
    admission.admit("b", 10)  # tenants take turns: b waits for 10 of a's tokens, not for all of them
    with pytest.raises(CapacityExceeded):
        admission.admit("a", 10)  # a's next request waits behind a's own 100,000 tokens


def test_a_burst_is_judged_by_a_full_engine_not_by_the_idle_one_it_arrives_at() -> None:
    admission = Admission(AdmissionLimits(max_delay=4.0, max_waiting=1000, slots=8))
    admission.observe_step(1, 0.02, full=False, sequences=1)  # measured alone: 20 ms a token
    admission.report({}, {}, free_slots=8)
    admitted = 0
    with pytest.raises(CapacityExceeded):
        for _ in range(200):
            admission.admit("a", 10, max_tokens=48)
            admitted += 1
    # With 8 busy slots a step is taken as 8 x 20 ms: a wave of 48 tokens lasts 7.7 s > 4 s, so only the
    # requests that find a free slot get in (an idle-rate estimate, 0.96 s a wave, would admit 4 more waves).
    assert admitted == 8
    admission.observe_step(8, 0.04, full=False, sequences=8)  # measured full: 40 ms a step, 1.9 s a wave
    for _ in range(8):
        admission.entered("a", 10)
    admission.report({}, {"a": 0}, free_slots=0)
    for _ in range(16):
        admission.admit("a", 10, max_tokens=48)  # two waves ahead: 3.8 s
    with pytest.raises(CapacityExceeded):
        admission.admit("a", 10, max_tokens=48)


def test_rows_on_a_warm_prefix_are_counted_as_their_rows_only() -> None:
    from minimill.engine.admission import ReuseEstimate

    prefix = list(range(1_600))
    admission = Admission(AdmissionLimits(max_delay=30.0, max_waiting=1000, slots=8))
    admission.observe_step(430, 10.0, full=True)  # a 1.5B on two cores: 43 tokens/s of prefill
    assert admission.to_compute("a", [*prefix, 1, 2]) == 1_602  # nothing seen yet
    admission.remember("a", [*prefix, 1, 2])
    assert admission.to_compute("a", [*prefix, 3, 4]) == 2
    row = [*prefix, 5, 6, 7]
    assert admission.to_compute("a", row) == len(row) - 1_600  # whole 32-token blocks of the prefix
    assert admission.to_compute("b", row) == len(row)  # another tenant's prompts are not its prefix
    assert admission.to_compute("a", row, reused=1_602) == 1  # a named prefix covering it all
    for n in range(8):  # eight rows in flight: each expects its own ~3 tokens and the others', not 8 x 1,600
        admission.admit("a", admission.to_compute("a", [*prefix, n]), max_tokens=1)
    with pytest.raises(CapacityExceeded):  # counted whole, the second row would wait 37 s for the first
        for _ in range(2):
            admission.admit("c", 1_602, max_tokens=1)
    admission.forget_prompts()
    assert admission.to_compute("a", row) == len(row)
    small = ReuseEstimate(block=2, capacity=3)
    small.remember("t", [1, 2, 3, 4, 5, 6, 7, 8])  # four blocks, three kept: the first is forgotten
    assert small.reusable("t", [1, 2, 3, 4, 9]) == 0
    small.remember("t", [1, 2, 3, 4])
    assert small.reusable("t", [1, 2, 3, 4]) == 3  # never the last token: it is computed for its logits
