"""The capability suites `minimill eval` runs, one module each, in a stable order.

`ALL` is the registry; `by_name` looks one up. Every suite generates seeded items and grades answers
exactly (see minimill.evals.suite).
"""

from __future__ import annotations

from minimill.evals.suite import Suite
from minimill.evals.suites import (
    arithmetic,
    classification,
    cleaning,
    code_output,
    dates,
    extraction,
    facts,
    formatting,
    reading,
    sorting,
    tools,
    translation,
    units,
)

ALL: tuple[Suite, ...] = (
    cleaning.SUITE,
    arithmetic.SUITE,
    units.SUITE,
    dates.SUITE,
    extraction.SUITE,
    classification.SUITE,
    sorting.SUITE,
    formatting.SUITE,
    reading.SUITE,
    facts.SUITE,
    translation.SUITE,
    code_output.SUITE,
    tools.SUITE,
)

_BY_NAME = {suite.name: suite for suite in ALL}


def by_name(name: str) -> Suite:
    """The suite called `name`; KeyError naming the known suites if there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown suite {name!r}; known suites: {', '.join(_BY_NAME)}") from None


__all__ = ["ALL", "by_name"]
