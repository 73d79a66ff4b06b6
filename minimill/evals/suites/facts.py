"""Short factual recall from a fixed list of unambiguous facts shipped here; items are a seeded sample."""

from __future__ import annotations

import re
import unicodedata

from minimill.evals.suite import Item, Suite
from minimill.evals.suites._common import score, seeded, strip_accents, user_item, words_only

NAME = "facts"

# (question, accepted answers): any accepted answer appearing as a whole phrase in the reply counts.
FACTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("Paris",)),
    ("What is the capital of Germany?", ("Berlin",)),
    ("What is the capital of Italy?", ("Rome",)),
    ("What is the capital of Spain?", ("Madrid",)),
    ("What is the capital of Portugal?", ("Lisbon",)),
    ("What is the capital of Japan?", ("Tokyo",)),
    ("What is the capital of China?", ("Beijing", "Peking")),
    ("What is the capital of Russia?", ("Moscow",)),
    ("What is the capital of Canada?", ("Ottawa",)),
    ("What is the capital of Australia?", ("Canberra",)),
    ("What is the capital of Egypt?", ("Cairo",)),
    ("What is the capital of Kenya?", ("Nairobi",)),
    ("What is the capital of Argentina?", ("Buenos Aires",)),
    ("What is the capital of Brazil?", ("Brasília", "Brasilia")),
    ("What is the capital of Mexico?", ("Mexico City",)),
    ("What is the capital of Peru?", ("Lima",)),
    ("What is the capital of Greece?", ("Athens",)),
    ("What is the capital of Norway?", ("Oslo",)),
    ("What is the capital of Sweden?", ("Stockholm",)),
    ("What is the capital of Finland?", ("Helsinki",)),
    ("What is the capital of Denmark?", ("Copenhagen",)),
    ("What is the capital of Poland?", ("Warsaw",)),
    ("What is the capital of Austria?", ("Vienna",)),
    ("What is the capital of Ireland?", ("Dublin",)),
    ("What is the capital of Hungary?", ("Budapest",)),
    ("What is the capital of Turkey?", ("Ankara",)),
    ("What is the capital of India?", ("New Delhi",)),
    ("What is the capital of South Korea?", ("Seoul",)),
    ("What is the capital of Thailand?", ("Bangkok",)),
    ("What is the capital of Cuba?", ("Havana",)),
    ("What is the capital of the United Kingdom?", ("London",)),
    ("What is the capital of Iceland?", ("Reykjavik",)),
    ("What is the capital of the Czech Republic?", ("Prague",)),
    ("What is the capital of Belgium?", ("Brussels",)),
    ("What is the capital of Chile?", ("Santiago",)),
    ("What is the chemical symbol for gold?", ("Au",)),
    ("What is the chemical symbol for silver?", ("Ag",)),
    ("What is the chemical symbol for iron?", ("Fe",)),
    ("What is the chemical symbol for sodium?", ("Na",)),
    ("What is the chemical symbol for potassium?", ("K",)),
    ("What is the chemical symbol for oxygen?", ("O",)),
    ("What is the chemical symbol for lead?", ("Pb",)),
    ("What is the chemical symbol for copper?", ("Cu",)),
    ("What is the chemical symbol for helium?", ("He",)),
    ("What is the chemical symbol for mercury?", ("Hg",)),
    ("Which chemical element has the symbol Fe?", ("iron",)),
    ("Which chemical element has the symbol H?", ("hydrogen",)),
    ("Which planet is closest to the Sun?", ("Mercury",)),
    ("Which planet is second from the Sun?", ("Venus",)),
    ("Which planet is third from the Sun?", ("Earth",)),
    ("Which planet is known as the Red Planet?", ("Mars",)),
    ("Which is the largest planet in the Solar System?", ("Jupiter",)),
    ("Which planet is sixth from the Sun?", ("Saturn",)),
    ("Which planet is seventh from the Sun?", ("Uranus",)),
    ("Which planet is eighth and farthest from the Sun?", ("Neptune",)),
    ("Who wrote Romeo and Juliet?", ("Shakespeare",)),
    ("Who wrote Pride and Prejudice?", ("Austen",)),
    ("Who wrote War and Peace?", ("Tolstoy",)),
    ("Who wrote Don Quixote?", ("Cervantes",)),
    ("Who wrote the novel 1984?", ("Orwell",)),
    ("Who wrote Oliver Twist?", ("Dickens",)),
    ("Who wrote Moby-Dick?", ("Melville",)),
    ("Who wrote Les Misérables?", ("Victor Hugo", "Hugo")),
    ("Who wrote the Harry Potter books?", ("Rowling",)),
    ("Who wrote The Divine Comedy?", ("Dante",)),
    ("Who painted the Mona Lisa?", ("Leonardo", "da Vinci")),
    ("Who developed the theory of relativity?", ("Einstein",)),
    ("How many days are in a week?", ("7", "seven")),
    ("How many legs does a spider have?", ("8", "eight")),
    ("How many sides does a triangle have?", ("3", "three")),
    ("How many minutes are in an hour?", ("60", "sixty")),
    ("How many hours are in a day?", ("24", "twenty-four", "twenty four")),
    ("What is the largest ocean on Earth?", ("Pacific",)),
    ("What is the tallest mountain in the world?", ("Everest",)),
    ("In which country are the pyramids of Giza?", ("Egypt",)),
    ("At how many degrees Celsius does water boil at sea level?", ("100", "one hundred")),
    ("At how many degrees Celsius does water freeze?", ("0", "zero")),
    ("Which gas do plants take in from the air for photosynthesis?", ("carbon dioxide", "CO2")),
    ("What is the chemical formula of water?", ("H2O",)),
    ("What is the hardest natural substance?", ("diamond",)),
    ("What is the main language spoken in Brazil?", ("Portuguese",)),
    ("What is the currency of Japan?", ("yen",)),
    ("What is the smallest prime number?", ("2", "two")),
    ("What is the square root of 81?", ("9", "nine")),
)

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalise(text: str) -> str:
    """Lower case, accents, punctuation, symbols and articles removed, spaces collapsed: the form answers are
    compared in ("100°C" reads as "100 c")."""
    spaced = "".join(" " if unicodedata.category(c).startswith("S") else c for c in strip_accents(text))
    return " ".join(_ARTICLES.sub(" ", words_only(spaced)).split())


def generate(seed: int, n: int) -> list[Item]:
    """n facts in a seeded order (reshuffled after each full pass); each reference is the accepted answers."""
    rng = seeded(NAME, seed)
    order: list[int] = []
    while len(order) < n:
        block = list(range(len(FACTS)))
        rng.shuffle(block)
        order += block
    items = []
    for i, k in enumerate(order[:n]):
        question, accepted = FACTS[k]
        prompt = f"{question} Answer in as few words as possible."
        items.append(user_item(NAME, seed, i, prompt, list(accepted), max_tokens=16))
    return items


def grade(item: Item, answer: str) -> float:
    """1 if the normalised answer contains an accepted answer as a whole word or phrase."""
    text = f" {normalise(answer)} "
    return score(any(f" {normalise(ref)} " in text for ref in item.reference))


SUITE = Suite(
    name=NAME, version="2", description="Factual recall: capitals, chemical symbols, planets, authors, basics.",
    generate=generate, grade=grade,
    keywords=("what is the capital", "capital of", "who wrote", "who painted", "chemical symbol", "which planet",
              "how many", "fact", "trivia"),
)
