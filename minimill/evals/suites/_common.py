"""Helpers shared by the suites: seeding, message building and the harmless-formatting cleanup graders allow."""

from __future__ import annotations

import random
import re
import string
import unicodedata
from collections.abc import Mapping
from typing import Any

from minimill.evals.suite import Item

MONTH_FULL = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December")
MONTH_ABBR = tuple(m[:3] for m in MONTH_FULL)

_FENCE = re.compile(r"^\s*```[\w+-]*\s*$")
_ANSWER_PREFIX = re.compile(r"^\s*(?:final\s+)?(?:answer|output|result)\s*:\s*", re.IGNORECASE)


def seeded(name: str, seed: int) -> random.Random:
    """A private generator for one suite and seed: string seeds hash stably, unlike the global state."""
    return random.Random(f"{name}:{seed}")


def user_item(name: str, seed: int, i: int, prompt: str, reference: Any, max_tokens: int,
              response_format: Mapping[str, Any] | None = None) -> Item:
    """An item whose only message is one user turn, with the suite's id scheme."""
    return Item(id=f"{name}-{seed}-{i}", messages=({"role": "user", "content": prompt},), reference=reference,
                max_tokens=max_tokens, response_format=response_format)


def unfence(answer: str) -> str:
    """The answer without Markdown code-fence lines (models often wrap even one-word answers)."""
    return "\n".join(line for line in answer.splitlines() if not _FENCE.match(line))


def first_line(answer: str) -> str:
    """The first non-empty line outside code fences, stripped; empty if there is none."""
    for line in unfence(answer).splitlines():
        if line.strip():
            return line.strip()
    return ""


def short_answer(answer: str) -> str:
    """The first line with an "Answer:" style prefix, surrounding backticks and one trailing period removed."""
    line = _ANSWER_PREFIX.sub("", first_line(answer)).strip()
    line = line.strip("`").strip()
    if line.endswith(".") and not line.endswith(".."):
        line = line[:-1].rstrip()
    return line


def strip_accents(text: str) -> str:
    """The text with combining accents removed ("é" -> "e"), for accepting unaccented spellings."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def words_only(text: str) -> str:
    """Lower case, punctuation (ASCII and Unicode) removed, whitespace collapsed: for comparing phrases."""
    kept = "".join(c for c in text.lower()
                   if not unicodedata.category(c).startswith("P") and c not in string.punctuation)
    return " ".join(kept.split())


def score(right: bool) -> float:
    """1.0 for a right answer, 0.0 otherwise."""
    return 1.0 if right else 0.0


def ordinal(day: int) -> str:
    """The day with its English ordinal suffix: 1st, 2nd, 3rd, 11th, 22nd."""
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"
