"""Extraction to JSON: a generated one-sentence record -> a JSON object with fixed, typed keys."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any, NamedTuple

from minimill.evals.suite import Item, Suite
from minimill.evals.suites._common import seeded, user_item
from minimill.evals.suites.json_schema import conforms, object_schema, parse_json, response_format

NAME = "extraction"

FIRST = ("Maria", "John", "Aiko", "Pedro", "Fatima", "Ken", "Olga", "Raj", "Anna", "Tom", "Ingrid", "Wei")
LAST = ("Lopez", "Smith", "Tanaka", "Silva", "Khan", "Berg", "Ivanova", "Patel", "Kowalska", "Murphy", "Dupont")
DEPARTMENTS = ("Sales", "Finance", "Marketing", "Legal", "Support", "Research")
CITIES = ("Lyon", "Osaka", "Denver", "Porto", "Leeds", "Gdansk", "Pune", "Quebec")


class Record(NamedTuple):
    """A record kind: its typed keys, sentence templates, and a maker of field values."""

    kind: str
    keys: dict[str, str]
    templates: tuple[str, ...]
    make: Callable[[random.Random], dict[str, Any]]


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _date(rng: random.Random) -> str:
    return (dt.date(2015, 1, 1) + dt.timedelta(days=rng.randrange(10 * 365))).isoformat()


RECORDS = (
    Record("order", {"order_id": "integer", "customer": "string", "date": "string", "quantity": "integer"},
           ("Order {order_id} was placed by {customer} on {date} for {quantity} units.",
            "On {date}, {customer} ordered {quantity} units (order number {order_id}).",
            "{customer} bought {quantity} units on {date}; the order number is {order_id}."),
           lambda r: {"order_id": r.randint(1000, 99999), "customer": _name(r), "date": _date(r),
                      "quantity": r.randint(1, 50)}),
    Record("booking", {"guest": "string", "room": "integer", "nights": "integer", "check_in": "string"},
           ("Guest {guest} booked room {room} for {nights} nights starting {check_in}.",
            "Room {room} is reserved for {guest} from {check_in}, {nights} nights."),
           lambda r: {"guest": _name(r), "room": r.randint(100, 999), "nights": r.randint(2, 14),
                      "check_in": _date(r)}),
    Record("employee", {"name": "string", "age": "integer", "department": "string", "city": "string"},
           ("{name}, aged {age}, works in the {department} department in {city}.",
            "The {department} team in {city} hired {name}, who is {age} years old."),
           lambda r: {"name": _name(r), "age": r.randint(19, 66), "department": r.choice(DEPARTMENTS),
                      "city": r.choice(CITIES)}),
)


def _prompt(record: Record, text: str) -> str:
    keys = ", ".join(f'"{key}" ({kind})' for key, kind in record.keys.items())
    return (f"Extract the fields from the text as a JSON object with the keys {keys}. "
            f"Answer with only the JSON object.\n\nText: {text}")


def generate(seed: int, n: int) -> list[Item]:
    """n one-sentence records; each reference is the field dict, and the item asks for a strict JSON schema."""
    rng = seeded(NAME, seed)
    items = []
    for i in range(n):
        record = rng.choice(RECORDS)
        fields = record.make(rng)
        text = rng.choice(record.templates).format(**fields)
        fmt = response_format(record.kind, object_schema(record.keys))
        items.append(user_item(NAME, seed, i, _prompt(record, text), fields, max_tokens=48, response_format=fmt))
    return items


def grade(item: Item, answer: str) -> float:
    """The fraction of fields equal to the reference; 0 if the answer is not JSON or breaks the item's schema."""
    if item.response_format is None:  # every generated item has one; a hand-built item without is ungradable
        return 0.0
    value = parse_json(answer)
    if not conforms(value, item.response_format["json_schema"]["schema"]):
        return 0.0
    reference: dict[str, Any] = item.reference
    return sum(value[key] == want for key, want in reference.items()) / len(reference)


SUITE = Suite(
    name=NAME, version="1", description="Extraction: one generated sentence to a JSON object with typed keys.",
    generate=generate, grade=grade,
    keywords=("extract", "json", "fields", "json object", "keys", "structured", "parse", "schema"),
)
