"""Unit conversion with exact answers: metric prefixes, time, and inches/centimetres rounded as the prompt says."""

from __future__ import annotations

import random
import re
from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple

from minimill.evals.suite import Item, Suite
from minimill.evals.suites._common import score, seeded, short_answer, user_item

NAME = "units"


class Conversion(NamedTuple):
    """One conversion: unit names, target = source * mul / div, and the unit words an answer may carry."""

    source: str
    target: str
    mul: int | str
    div: int | str
    symbols: tuple[str, ...]


CONVERSIONS = (
    Conversion("kilometres", "metres", 1000, 1, ("m", "metres", "meters")),
    Conversion("metres", "kilometres", 1, 1000, ("km", "kilometres", "kilometers")),
    Conversion("kilograms", "grams", 1000, 1, ("g", "grams")),
    Conversion("grams", "kilograms", 1, 1000, ("kg", "kilograms")),
    Conversion("hours", "minutes", 60, 1, ("min", "minutes")),
    Conversion("minutes", "hours", 1, 60, ("h", "hours")),
    Conversion("litres", "millilitres", 1000, 1, ("ml", "millilitres", "milliliters")),
    Conversion("millilitres", "litres", 1, 1000, ("l", "litres", "liters")),
    Conversion("inches", "centimetres", "2.54", 1, ("cm", "centimetres", "centimeters")),
    Conversion("centimetres", "inches", 1, "2.54", ("in", "inches")),
)

_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)\s*([a-z]*)", re.IGNORECASE)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")  # "3,500" is 3500; "0,5" stays unparseable


def _amount(rng: random.Random, conv: Conversion) -> Decimal:
    """A source amount whose conversion is exact, except cm -> inches, which the prompt asks to round."""
    if conv.source in ("metres", "grams", "millilitres"):
        return Decimal(rng.randint(1, 99) * 100)
    if conv.source == "minutes":
        return Decimal(rng.randint(1, 16) * 30)
    if conv.source == "hours":
        return Decimal(rng.randint(1, 24)) / (2 if rng.random() < 0.3 else 1)
    if conv.source in ("kilometres", "kilograms", "litres"):
        return Decimal(rng.randint(1, 99)) / (10 if rng.random() < 0.4 else 1)
    return Decimal(rng.randint(1, 100))


def _plain(value: Decimal) -> str:
    """The shortest decimal text: 2.50 -> "2.5", 3500.000 -> "3500"."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def generate(seed: int, n: int) -> list[Item]:
    """n "Convert X a to b" questions; each reference is {"value": decimal text, "units": accepted unit words}."""
    rng = seeded(NAME, seed)
    items = []
    for i in range(n):
        conv = rng.choice(CONVERSIONS)
        amount = _amount(rng, conv)
        # Dividing last keeps every conversion but cm -> inches exact (150 / 60 is 2.5, not 2.4999...).
        value = amount * Decimal(conv.mul) / Decimal(conv.div)
        if conv.source == "centimetres":
            value = value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
            how = "Answer with only the number, rounded to 2 decimal places."
        else:
            how = "Answer with only the number."
        source = conv.source if amount != 1 else ("inch" if conv.source == "inches" else conv.source[:-1])
        prompt = f"Convert {_plain(amount)} {source} to {conv.target}. {how}"
        reference = {"value": _plain(value), "units": list(conv.symbols)}
        items.append(user_item(NAME, seed, i, prompt, reference, max_tokens=12))
    return items


def grade(item: Item, answer: str) -> float:
    """1 if the answer's number equals the reference value (2.50 = 2.5), optionally followed by the target unit."""
    match = _NUMBER.fullmatch(_THOUSANDS.sub("", short_answer(answer)))
    if not match or (match[2] and match[2].lower() not in item.reference["units"]):
        return 0.0
    return score(Decimal(match[1]) == Decimal(item.reference["value"]))


SUITE = Suite(
    name=NAME, version="1", description="Unit conversion (length, mass, time, volume) with exact or stated rounding.",
    generate=generate, grade=grade,
    keywords=("convert", "conversion", "how many", "kilometres", "kilometers", "metres", "meters", "kilograms",
              "grams", "minutes", "hours", "litres", "liters", "millilitres", "inches", "centimetres", "cm", "km"),
)
