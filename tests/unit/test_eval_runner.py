"""How the eval runner turns an answer into a result: grade, tokens, and cost from wherever it is known."""

from __future__ import annotations

import pytest

from minimill.evals.runner import ListPrice, graded, request_body
from minimill.evals.suites import by_name

FACTS = by_name("facts")
ITEM = FACTS.generate(1, 1)[0]


def reply(text: str, **usage: object) -> dict[str, object]:
    return {"model": "m", "choices": [{"message": {"content": text}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 40},
                      **usage}}


def test_cost_comes_from_usage_cost_then_the_list_price_then_zero() -> None:
    price = ListPrice(input=1.0, cached_input=0.1, output=4.0)
    assert graded("m", FACTS, 1, ITEM, reply("x", cost={"total": 0.5}), 0.1, price).cost_usd == 0.5
    assert graded("m", FACTS, 1, ITEM, reply("x"), 0.1, price).cost_usd == pytest.approx((60 + 4 + 40) / 1e6)
    assert graded("m", FACTS, 1, ITEM, reply("x"), 0.1).cost_usd == 0.0
    routed = {**reply("x", cost={"total": 0.5}), "router": {"total_cost": 0.75}}
    assert graded("auto", FACTS, 1, ITEM, routed, 0.1).cost_usd == 0.75  # every attempt, not only the last


def test_a_result_is_graded_and_counted() -> None:
    right = graded("m", FACTS, 1, ITEM, reply(str(ITEM.reference if isinstance(ITEM.reference, str)
                                                   else ITEM.reference[0])), 0.2)
    wrong = graded("m", FACTS, 1, ITEM, reply("I do not know"), 0.2)
    assert right.score == 1.0 and wrong.score == 0.0
    assert (right.prompt_tokens, right.completion_tokens, right.cached_tokens, right.answered_by) == (100, 10, 40, "m")
    body = request_body("m", ITEM)
    assert body["temperature"] == 0 and body["max_tokens"] == ITEM.max_tokens and body["messages"][0]["content"]
