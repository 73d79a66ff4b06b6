"""Tool calling: a request that one of several offered functions answers -> the right call, with the right
arguments.

Each item offers three or four functions (`tools`, `tool_choice: "auto"`) and asks for something exactly
one of them does, with every argument stated in the request. The answer is the model's calls (the runner
writes them as a JSON list of `{"name", "arguments"}`). Graded exactly: half for calling the right
function (and only it), half for arguments equal to the reference (numbers by value, strings exactly).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any, NamedTuple

from minimill.evals.suite import Item, Suite
from minimill.evals.suites._common import seeded

NAME = "tools"

CITIES = ("Lisbon", "Osaka", "Denver", "Porto", "Leeds", "Gdansk", "Pune", "Quebec", "Nairobi", "Lima")
CURRENCIES = ("USD", "EUR", "JPY", "GBP", "CHF", "INR")
SYMBOLS = ("AAPL", "MSFT", "NVDA", "SAP", "TSLA", "ASML")
PEOPLE = ("maria@example.com", "ken@example.org", "olga@example.net", "raj@example.com")
TOPICS = ("budget review", "team lunch", "release plan", "dentist", "quarterly report")


class Tool(NamedTuple):
    """A function on offer: its schema, requests it answers, and a maker of argument values."""

    name: str
    description: str
    parameters: dict[str, Any]
    requests: tuple[str, ...]
    make: Callable[[random.Random], dict[str, Any]]


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _date(rng: random.Random) -> str:
    return f"2027-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


TOOLS = (
    Tool("get_weather", "Current weather in a city.",
         _object({"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}),
         ("What's the weather in {city} right now? Use {unit}.", "Tell me the current weather in {city} in {unit}."),
         lambda r: {"city": r.choice(CITIES), "unit": r.choice(["celsius", "fahrenheit"])}),
    Tool("convert_currency", "Convert an amount of money from one currency to another.",
         _object({"amount": {"type": "number"}, "from_currency": {"type": "string"},
                  "to_currency": {"type": "string"}}),
         ("How much is {amount} {from_currency} in {to_currency}?",
          "Convert {amount} {from_currency} to {to_currency}, please."),
         lambda r: dict(zip(("from_currency", "to_currency"), r.sample(CURRENCIES, 2), strict=True),
                        amount=r.randint(5, 5000))),
    Tool("stock_price", "The latest price of a stock, by ticker symbol.", _object({"symbol": {"type": "string"}}),
         ("What is {symbol} trading at?", "Look up the latest share price of {symbol}."),
         lambda r: {"symbol": r.choice(SYMBOLS)}),
    Tool("set_timer", "Start a countdown timer.", _object({"minutes": {"type": "integer"}}),
         ("Set a timer for {minutes} minutes.", "Start a {minutes}-minute timer."),
         lambda r: {"minutes": r.randint(1, 90)}),
    Tool("send_email", "Send a short email.",
         _object({"to": {"type": "string"}, "subject": {"type": "string"}}),
         ('Email {to} with the subject "{subject}".', 'Send an email to {to}; subject: "{subject}".'),
         lambda r: {"to": r.choice(PEOPLE), "subject": r.choice(TOPICS).capitalize()}),
    Tool("add_event", "Add an event to the calendar on a date (YYYY-MM-DD).",
         _object({"title": {"type": "string"}, "date": {"type": "string"}}),
         ('Put "{title}" in my calendar on {date}.', 'Add an event called "{title}" on {date}.'),
         lambda r: {"title": r.choice(TOPICS).capitalize(), "date": _date(r)}),
)


def _spec(tool: Tool) -> dict[str, Any]:
    return {"type": "function", "function": {"name": tool.name, "description": tool.description,
                                             "parameters": tool.parameters}}


def generate(seed: int, n: int) -> list[Item]:
    """n requests, each answered by one of the 3-4 functions offered (in a shuffled order)."""
    rng = seeded(NAME, seed)
    items = []
    for i in range(n):
        target = rng.choice(TOOLS)
        offered = [target, *rng.sample([t for t in TOOLS if t is not target], rng.randint(2, 3))]
        rng.shuffle(offered)
        arguments = target.make(rng)
        prompt = rng.choice(target.requests).format(**arguments)
        items.append(Item(id=f"{NAME}-{seed}-{i}", messages=({"role": "user", "content": prompt},),
                          reference={"name": target.name, "arguments": arguments}, max_tokens=96,
                          tools=tuple(_spec(t) for t in offered)))
    return items


def _same(got: Any, want: Any) -> bool:
    """Equal as JSON values, numbers by value (5 == 5.0)."""
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return float(got) == float(want)
    return bool(got == want)


def grade(item: Item, answer: str) -> float:
    """Half for exactly one call to the right function, half more for its arguments equal to the reference."""
    try:
        calls = json.loads(answer)
    except ValueError:
        return 0.0
    if not isinstance(calls, list) or len(calls) != 1 or not isinstance(calls[0], dict):
        return 0.0
    want = item.reference
    if calls[0].get("name") != want["name"]:
        return 0.0
    got = calls[0].get("arguments")
    right = isinstance(got, dict) and set(got) == set(want["arguments"]) and \
        all(_same(got[k], v) for k, v in want["arguments"].items())
    return 1.0 if right else 0.5


SUITE = Suite(
    name=NAME, version="1", description="Tool calling: the right function of 3-4 offered, with exact arguments.",
    generate=generate, grade=grade,
    keywords=("call the function", "use the tool", "tool", "function call"),
)
