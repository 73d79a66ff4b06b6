"""Sorting and counting: sort a short list of integers, or count a letter in a word or a word in a sentence."""

from __future__ import annotations

import random
import re

from minimill.evals.suite import Item, Suite
from minimill.evals.suites._common import score, seeded, short_answer, user_item

NAME = "sorting"

WORDS = ("strawberry", "banana", "mississippi", "committee", "bookkeeper", "letter", "parallel", "engineer",
         "assessment", "balloon", "coffee", "address", "pepper", "necessary", "tomorrow", "referee")
SMALL_WORDS = ("cat", "dog", "red", "sun", "tree", "blue", "fish", "cup")
_COUNT = re.compile(r"[0-9]+")
_INTEGER_LIST = re.compile(r"\[?\s*(-?\d+(?:\s*,\s*-?\d+)*)\s*\]?")


def _sort(rng: random.Random) -> tuple[str, list[int], int]:
    numbers = rng.sample(range(1, 100), rng.randint(4, 7))
    shown = ", ".join(map(str, numbers))
    prompt = (f"Sort these numbers in ascending order: {shown}\n"
              "Answer with only the sorted numbers, separated by commas.")
    return prompt, sorted(numbers), 4 * len(numbers)


def _count_letter(rng: random.Random) -> tuple[str, int, int]:
    word = rng.choice(WORDS)
    letter = rng.choice(sorted(set(word)))
    prompt = f'How many times does the letter "{letter}" appear in the word "{word}"? Answer with only the number.'
    return prompt, word.count(letter), 4


def _count_word(rng: random.Random) -> tuple[str, int, int]:
    target = rng.choice(SMALL_WORDS)
    others = [w for w in SMALL_WORDS if w != target]
    words = [rng.choice(others) for _ in range(rng.randint(5, 9))]
    for _ in range(rng.randint(1, 4)):
        words.insert(rng.randrange(len(words) + 1), target)
    prompt = (f'How many times does the word "{target}" appear in this list: {" ".join(words)}\n'
              "Answer with only the number.")
    return prompt, words.count(target), 4


def generate(seed: int, n: int) -> list[Item]:
    """n items, sorts or counts by a seeded coin; a sort's reference is the sorted list, a count's the integer."""
    rng = seeded(NAME, seed)
    items = []
    for i in range(n):
        kind = _sort if rng.random() < 0.5 else rng.choice((_count_letter, _count_word))
        prompt, reference, max_tokens = kind(rng)
        items.append(user_item(NAME, seed, i, prompt, reference, max_tokens=max_tokens))
    return items


def grade(item: Item, answer: str) -> float:
    """Sorts: 1 if the comma-separated integers (brackets allowed) equal the sorted list exactly.
    Counts: 1 if the answer is exactly the integer."""
    text = short_answer(answer)
    if isinstance(item.reference, list):
        match = _INTEGER_LIST.fullmatch(text)
        return score(match is not None and [int(x) for x in match[1].split(",")] == item.reference)
    return score(_COUNT.fullmatch(text) is not None and int(text) == item.reference)


SUITE = Suite(
    name=NAME, version="1", description="Sorting integers ascending, and counting letters in words or words in lists.",
    generate=generate, grade=grade,
    keywords=("sort", "sorted", "ascending", "descending", "order these", "how many times", "count", "occurrences",
              "appear"),
)
