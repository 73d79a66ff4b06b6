"""Classification of short generated sentences: sentiment (positive/negative) or topic (four labels)."""

from __future__ import annotations

import random

from minimill.evals.suite import Item, Suite
from minimill.evals.suites._common import score, seeded, short_answer, user_item

NAME = "classification"

SENTIMENT: dict[str, tuple[str, ...]] = {
    "positive": ("I absolutely loved the {thing}; it was {good}.", "The {thing} was {good} and I would buy it again.",
                 "What a {good} {thing}! Highly recommended.", "Our {thing} arrived early and it is {good}."),
    "negative": ("I hated the {thing}; it was {bad}.", "The {thing} was {bad} and I want my money back.",
                 "What a {bad} {thing}. Never again.", "Our {thing} arrived late and it is {bad}."),
}
GOOD = ("wonderful", "excellent", "fantastic", "delightful", "great")
BAD = ("terrible", "awful", "broken", "disappointing", "horrible")
THINGS = ("hotel", "phone", "meal", "film", "jacket", "concert", "laptop", "book")

TOPIC: dict[str, tuple[str, ...]] = {
    "sports": ("The striker scored twice as {team} won the cup final.", "{team} lost the match after a late penalty.",
               "The marathon runner from {team} broke the world record."),
    "technology": ("{team} released a new smartphone with a faster chip.",
                   "A software update from {team} fixes a security bug in the browser.",
                   "Engineers at {team} built a computer that runs on solar power."),
    "food": ("{team} opened a bakery that sells sourdough bread and pastries.",
             "This soup recipe from {team} needs garlic, onions and fresh basil.",
             "The chef at {team} cooks pasta with tomato sauce every Friday."),
    "weather": ("Heavy rain and strong winds are expected near {team} tomorrow.",
                "Forecasters at {team} predict snow and freezing temperatures tonight.",
                "A heatwave near {team} will bring sunny skies and 38 degrees."),
}
NAMES = ("Northfield", "Riverton", "Ashford", "Lakeside", "Westbrook", "Kingsport", "Elmwood", "Bayview")


def _sentiment(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(tuple(SENTIMENT))
    text = rng.choice(SENTIMENT[label]).format(thing=rng.choice(THINGS), good=rng.choice(GOOD), bad=rng.choice(BAD))
    return (f"Classify the sentiment of this review as positive or negative.\n\nReview: {text}\n\n"
            "Answer with only one word: positive or negative."), label


def _topic(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(tuple(TOPIC))
    text = rng.choice(TOPIC[label]).format(team=rng.choice(NAMES))
    labels = ", ".join(TOPIC)
    return (f"Classify the topic of this sentence as one of: {labels}.\n\nSentence: {text}\n\n"
            f"Answer with only one word: {labels}."), label


def generate(seed: int, n: int) -> list[Item]:
    """n sentences, a seeded mix of sentiment and topic questions; each reference is the label word."""
    rng = seeded(NAME, seed)
    items = []
    for i in range(n):
        prompt, label = (_sentiment if rng.random() < 0.5 else _topic)(rng)
        items.append(user_item(NAME, seed, i, prompt, label, max_tokens=4))
    return items


def grade(item: Item, answer: str) -> float:
    """1 if the answer is exactly the label word, ignoring case (a trailing period or "Answer:" prefix allowed)."""
    return score(short_answer(answer).lower() == item.reference)


SUITE = Suite(
    name=NAME, version="1", description="Classification: sentiment or topic of a short sentence, one label word.",
    generate=generate, grade=grade,
    keywords=("classify", "classification", "sentiment", "positive or negative", "topic", "category", "label",
              "which category"),
)
