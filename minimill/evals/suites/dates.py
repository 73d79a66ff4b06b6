"""Date normalisation: one date in a varied human format, answered in ISO YYYY-MM-DD."""

from __future__ import annotations

import datetime as dt
import random

from minimill.evals.suite import Item, Suite
from minimill.evals.suites._common import MONTH_ABBR, MONTH_FULL, ordinal, score, seeded, short_answer, user_item

NAME = "dates"


def render(day: dt.date, kind: int) -> str:
    """The date in format number `kind` (0-7); numeric formats that could be read two ways say which way."""
    y, m, d = day.year, day.month, day.day
    formats = (
        f"{MONTH_FULL[m - 1]} {d}, {y}",
        f"{d} {MONTH_ABBR[m - 1]} {y}",
        f"{y}/{m:02d}/{d:02d}",
        f"{d:02d}.{m:02d}.{y} (day first)",
        f"{m:02d}/{d:02d}/{y} (month first)",
        f"the {ordinal(d)} of {MONTH_FULL[m - 1]} {y}",
        f"{MONTH_ABBR[m - 1]} {d} {y}",
        f"{d}-{MONTH_ABBR[m - 1]}-{y}",
    )
    return formats[kind]


def _random_day(rng: random.Random) -> dt.date:
    return dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(100 * 365))


def generate(seed: int, n: int) -> list[Item]:
    """n "Convert this date to ISO format" questions; each reference is the YYYY-MM-DD text."""
    rng = seeded(NAME, seed)
    items = []
    for i in range(n):
        day = _random_day(rng)
        text = render(day, rng.randrange(8))
        prompt = f"Convert this date to ISO format YYYY-MM-DD: {text}\nAnswer with only the date."
        items.append(user_item(NAME, seed, i, prompt, day.isoformat(), max_tokens=12))
    return items


def grade(item: Item, answer: str) -> float:
    """1 if the answer is exactly the reference YYYY-MM-DD (a trailing period or "Answer:" prefix allowed)."""
    return score(short_answer(answer) == item.reference)


SUITE = Suite(
    name=NAME, version="1", description="Date normalisation: varied human date formats to ISO YYYY-MM-DD.",
    generate=generate, grade=grade,
    keywords=("date", "iso format", "yyyy-mm-dd", "iso 8601", "normalise the date", "normalize the date",
              "format the date", "day first", "month first"),
)
