"""The W1 data-cleaning task: the workload's instruction prefix plus one generated messy row; seven fields graded."""

from __future__ import annotations

from functools import cache
from importlib import resources

from minimill.evals.suite import Item, Suite
from minimill.evals.suites._common import seeded, short_answer, user_item
from minimill.evals.suites.w1_cleaner import FIELDS, clean_row
from minimill.evals.suites.w1_rows import messy_row

NAME = "cleaning"


@cache
def prefix() -> str:
    """The W1 instruction prefix shipped with the package (a copy of the shared workload's w1_prefix.txt)."""
    return resources.files("minimill.evals.suites").joinpath("data/w1_prefix.txt").read_text(encoding="utf-8")


def prompt(row: str) -> str:
    """The W1 request for one row: the prefix, which ends "Now clean the following row.", then the row."""
    return prefix().rstrip("\n") + "\n" + row


def generate(seed: int, n: int) -> list[Item]:
    """n messy rows; each reference is the reference cleaner's seven fields."""
    rng = seeded(NAME, seed)
    items = []
    for i in range(n):
        row, _ = messy_row(rng)
        items.append(user_item(NAME, seed, i, prompt(row), clean_row(row), max_tokens=48))
    return items


def grade(item: Item, answer: str) -> float:
    """The fraction of the seven fields equal to the reference; 0 unless the first line (an "Output:" prefix
    and a trailing period allowed) has exactly seven comma-separated fields."""
    fields = [f.strip() for f in short_answer(answer).split(",")]
    if len(fields) != len(FIELDS):
        return 0.0
    return sum(got == want for got, want in zip(fields, item.reference, strict=True)) / len(FIELDS)


SUITE = Suite(
    name=NAME, version="1", description="W1: clean one messy customer CSV row into seven normalised fields.",
    generate=generate, grade=grade,
    keywords=("clean", "cleaned", "csv", "row", "customer", "normalise", "normalize", "lifetime_value",
              "signup_date", "data-cleaning", "fields"),
)
