"""Integer arithmetic: one or two operations on small integers; the answer is one integer."""

from __future__ import annotations

import random
import re

from minimill.evals.suite import Item, Suite
from minimill.evals.suites._common import score, seeded, short_answer, user_item

NAME = "arithmetic"
_INTEGER = re.compile(r"[-−]?\d+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _expression(rng: random.Random) -> tuple[str, int]:
    """One expression and its value: mostly single operations, some two-step ones with brackets."""
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 12)
    kind = rng.randrange(6)
    if kind == 0:
        return f"{a} + {b}", a + b
    if kind == 1:
        return f"{a} - {b}", a - b
    if kind == 2:
        x, y = rng.randint(2, 25), rng.randint(2, 12)
        return f"{x} * {y}", x * y
    if kind == 3:
        return f"({a} + {b}) * {c}", (a + b) * c
    if kind == 4:
        return f"{c} * {b} - {a}", c * b - a
    return f"{a} + {b} - {c}", a + b - c


def generate(seed: int, n: int) -> list[Item]:
    """n "What is <expression>?" questions; each reference is the integer value."""
    rng = seeded(NAME, seed)
    items = []
    for i in range(n):
        text, value = _expression(rng)
        prompt = f"What is {text}? Answer with only the number."
        items.append(user_item(NAME, seed, i, prompt, value, max_tokens=8))
    return items


def grade(item: Item, answer: str) -> float:
    """1 if the answer is exactly the reference integer (a trailing period, an "Answer:" prefix and thousands
    separators allowed)."""
    text = _THOUSANDS.sub("", short_answer(answer))
    return score(bool(_INTEGER.fullmatch(text)) and int(text.replace("−", "-")) == item.reference)


SUITE = Suite(
    name=NAME, version="2", description="Integer arithmetic: +, -, * and small bracketed two-step expressions.",
    generate=generate, grade=grade,
    keywords=("calculate", "compute", "what is", "how much is", "sum of", "product of", "plus", "minus", "times",
              "multiplied by", "+", "*"),
)
