"""Instruction-format following (suite "format"): word count and case, yes/no, reversal, repetition, JSON shape.

Each reference names its rule; the grader checks the rule exactly, and the content too where the
question determines it. Rules about the whole reply allow no second line.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from minimill.evals.suite import Item, Suite
from minimill.evals.suites._common import score, seeded, short_answer, unfence, user_item
from minimill.evals.suites.json_schema import parse_json

NAME = "format"

TOPICS = ("the sea", "winter", "coffee", "music", "cats", "mountains", "trains", "the moon")
WORDS = ("apple", "garden", "pencil", "window", "rocket", "silver", "planet", "button", "candle", "forest")
_UPPER_WORD = re.compile(r"[A-Z]+(?:['-][A-Z]+)*")

Maker = Callable[[random.Random], tuple[str, dict[str, Any], int]]


def _upper_words(rng: random.Random) -> tuple[str, dict[str, Any], int]:
    n = rng.randint(2, 4)
    words = {2: "two", 3: "three", 4: "four"}[n]
    prompt = f"Reply with exactly {words} words about {rng.choice(TOPICS)}, all in upper case. Write nothing else."
    return prompt, {"rule": "upper_words", "count": n}, 16


def _yes_no(rng: random.Random) -> tuple[str, dict[str, Any], int]:
    yes = rng.random() < 0.5  # decided first, so "always no" scores only half
    kind = rng.randrange(3)
    if kind == 0:
        low, high = sorted(rng.sample(range(1, 100), 2))
        question = f"Is {high} greater than {low}?" if yes else f"Is {low} greater than {high}?"
    elif kind == 1:
        number = 2 * rng.randint(1, 49) + (0 if yes else 1)
        question = f"Is {number} an even number?"
    else:
        word = rng.choice(WORDS)
        letter = word[0] if yes else rng.choice([c for c in "abcdefgprstw" if c != word[0]])
        question = f'Does the word "{word}" start with the letter "{letter}"?'
    prompt = f"{question} Answer with only yes or no."
    return prompt, {"rule": "exact", "answer": "yes" if yes else "no"}, 2


def _reverse(rng: random.Random) -> tuple[str, dict[str, Any], int]:
    word = rng.choice(WORDS)
    prompt = f'Write the word "{word}" reversed, letter by letter. Answer with only the reversed word.'
    return prompt, {"rule": "exact", "answer": word[::-1]}, 8


def _repeat(rng: random.Random) -> tuple[str, dict[str, Any], int]:
    word, n = rng.choice(WORDS), rng.randint(2, 5)
    prompt = f'Write the word "{word}" exactly {n} times, separated by single spaces, and nothing else.'
    return prompt, {"rule": "exact", "answer": " ".join([word] * n)}, 3 * n + 2


def _json_answer(rng: random.Random) -> tuple[str, dict[str, Any], int]:
    value: int | str
    if rng.random() < 0.5:
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        what, value = f"the sum of {a} and {b}, as a number", a + b
    else:
        word = rng.choice(WORDS)
        what, value = f'the word "{word}" in upper case, as a string', word.upper()
    prompt = (f'Respond in JSON with a single key "answer" whose value is {what}. '
              "Output only the JSON object.")
    return prompt, {"rule": "json_answer", "answer": value}, 16


MAKERS: tuple[Maker, ...] = (_upper_words, _yes_no, _reverse, _repeat, _json_answer)


def generate(seed: int, n: int) -> list[Item]:
    """n instructions, a seeded mix of the five rules; each reference is {"rule": ..., plus its parameters}."""
    rng = seeded(NAME, seed)
    items = []
    for i in range(n):
        prompt, reference, max_tokens = rng.choice(MAKERS)(rng)
        items.append(user_item(NAME, seed, i, prompt, reference, max_tokens=max_tokens))
    return items


def grade(item: Item, answer: str) -> float:
    """1 if the answer follows the item's rule exactly: upper_words (that many upper-case words on one line),
    exact (the determined text, ignoring case), json_answer (an object whose only key "answer" has the value)."""
    rule = item.reference["rule"]
    if rule == "json_answer":
        value = parse_json(answer)
        if not isinstance(value, dict) or list(value) != ["answer"]:
            return 0.0
        got, want = value["answer"], item.reference["answer"]
        return score(type(got) is type(want) and got == want)
    if "\n" in unfence(answer).strip():
        return 0.0  # "nothing else": a second line breaks the rule
    text = short_answer(answer)
    if rule == "upper_words":
        words = [w.rstrip(",;:!") for w in text.split()]  # punctuation between words is not a word
        return score(len(words) == item.reference["count"] and all(_UPPER_WORD.fullmatch(w) for w in words))
    return score(text.lower() == item.reference["answer"])


SUITE = Suite(
    name=NAME, version="1", description="Format following: word count/case, yes-no, reversal, repetition, JSON.",
    generate=generate, grade=grade,
    keywords=("reply with exactly", "upper case", "uppercase", "only yes or no", "reversed", "respond in json",
              "exactly", "nothing else", "only the", "format"),
)
