"""Multiple-choice reading comprehension: a generated short passage, one question, options A-D."""

from __future__ import annotations

import random
import re

from minimill.evals.suite import Item, Suite
from minimill.evals.suites._common import score, seeded, user_item

NAME = "reading"
LETTERS = "ABCD"

PEOPLE = ("Maya", "Oskar", "Lena", "Tariq", "Nina", "Hugo", "Priya", "Felix", "Sara", "Diego")
TOWNS = ("Brookfield", "Marlow", "Eastwick", "Ferndale", "Oakridge", "Pinehurst", "Stonebridge", "Willowby")
JOBS = ("a baker", "a nurse", "a teacher", "a pilot", "a gardener", "a librarian", "an engineer", "a painter")
PETS = ("a grey cat", "a small dog", "two goldfish", "a parrot", "a rabbit", "a tortoise")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
FOODS = ("apples", "bread", "cheese", "fish", "rice", "oranges", "eggs", "tomatoes")
_LETTER = re.compile(r"(?<![A-Za-z])([A-D])(?![A-Za-z])")


def _passage(rng: random.Random) -> tuple[str, list[tuple[str, str, tuple[str, ...]]]]:
    """A passage and its questions, each (question, right option, pool its wrong options come from)."""
    person, town, job, pet = rng.choice(PEOPLE), rng.choice(TOWNS), rng.choice(JOBS), rng.choice(PETS)
    day, food = rng.choice(DAYS), rng.choice(FOODS)
    km, years = rng.randint(2, 9), rng.randint(3, 15)
    friend = rng.choice([p for p in PEOPLE if p != person])
    text = (f"{person} has lived in {town} for {years} years and works as {job}. "
            f"Every {day}, {person} walks {km} kilometres to the market with {friend} to buy {food}. "
            f"At home, {person} looks after {pet}.")
    numbers = tuple(str(x) for x in range(2, 16))
    questions = [
        (f"Where does {person} live?", town, TOWNS),
        (f"What is {person}'s job?", job, JOBS),
        (f"On which day does {person} go to the market?", day, DAYS),
        (f"How many kilometres does {person} walk to the market?", str(km), numbers),
        (f"What does {person} buy at the market?", food, FOODS),
        (f"Who goes to the market with {person}?", friend, tuple(p for p in PEOPLE if p != person)),
        (f"How many years has {person} lived in {town}?", str(years), numbers),
        (f"What pet does {person} look after?", pet, PETS),
    ]
    return text, questions


def generate(seed: int, n: int) -> list[Item]:
    """n passages with one question each; options are the right one and three from the same pool, shuffled;
    each reference is the right option's letter."""
    rng = seeded(NAME, seed)
    items = []
    for i in range(n):
        passage, questions = _passage(rng)
        question, right, pool = rng.choice(questions)
        options = [right, *rng.sample([o for o in pool if o != right], 3)]
        rng.shuffle(options)
        listed = "\n".join(f"{letter}) {option}" for letter, option in zip(LETTERS, options, strict=True))
        prompt = (f"Read the passage and answer the question.\n\nPassage: {passage}\n\nQuestion: {question}\n"
                  f"{listed}\n\nAnswer with only the letter (A, B, C or D).")
        items.append(user_item(NAME, seed, i, prompt, LETTERS[options.index(right)], max_tokens=4))
    return items


def grade(item: Item, answer: str) -> float:
    """1 if the first standalone capital A-D in the answer ("B", "B)", "(B)", "Answer: B") is the reference."""
    match = _LETTER.search(answer)
    return score(match is not None and match[1] == item.reference)


SUITE = Suite(
    name=NAME, version="1", description="Reading comprehension: a short passage, one question, options A-D.",
    generate=generate, grade=grade,
    keywords=("passage", "read the", "according to the text", "which of the following", "multiple choice",
              "options", "a)", "b)", "answer with the letter"),
)
