"""Capability suites: registry, seeded determinism, graders (right, wrong, harmless formatting) and the W1 cleaner."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from minimill.evals.suite import Item, Suite
from minimill.evals.suites import ALL, by_name, cleaning, code_output, extraction, formatting, reading
from minimill.evals.suites.json_schema import conforms, object_schema
from minimill.evals.suites.w1_cleaner import (
    clean_country,
    clean_customer_id,
    clean_email,
    clean_full_name,
    clean_lifetime_value,
    clean_phone,
    clean_row,
    clean_signup_date,
    split_row,
)
from minimill.evals.suites.w1_rows import messy_row

NAMES = ("cleaning", "arithmetic", "units", "dates", "extraction", "classification", "sorting", "format", "reading",
         "facts", "translation", "code", "tools")
SHARED_PREFIX = Path(__file__).resolve().parents[3] / "shared" / "workloads" / "w1_prefix.txt"


def _format_answer(ref: dict[str, Any]) -> str:
    if ref["rule"] == "upper_words":
        return " ".join(["BLUE", "COLD", "SEA", "WAVES"][: ref["count"]])
    if ref["rule"] == "json_answer":
        return json.dumps({"answer": ref["answer"]})
    return str(ref["answer"])


def _wrong_format(ref: dict[str, Any]) -> str:
    if ref["rule"] == "upper_words":
        return " ".join(["Blue", "cold", "sea", "waves"][: ref["count"]])
    if ref["rule"] == "json_answer":
        return json.dumps({"answer": ref["answer"], "note": 1})
    return str(ref["answer"]) + "x"


# How a model would write each suite's reference answer, and a plausible wrong answer.
RIGHT: dict[str, Callable[[Any], str]] = {
    "cleaning": ",".join,
    "arithmetic": str,
    "units": lambda ref: ref["value"],
    "dates": str,
    "extraction": json.dumps,
    "classification": str.capitalize,
    "sorting": lambda ref: ", ".join(map(str, ref)) if isinstance(ref, list) else str(ref),
    "format": _format_answer,
    "reading": str,
    "facts": lambda ref: ref[0],
    "translation": lambda ref: ref[0],
    "code": str,
    "tools": lambda ref: json.dumps([ref]),
}
WRONG: dict[str, Callable[[Any], str]] = {
    "cleaning": lambda ref: "UNKNOWN," + ",".join(["x"] * 6),
    "arithmetic": lambda ref: str(ref + 1),
    "units": lambda ref: str(float(ref["value"]) * 10 + 1),
    "dates": lambda ref: ref[:8] + ("01" if ref[8:] != "01" else "02"),
    "extraction": lambda ref: json.dumps({k: (v + 1 if isinstance(v, int) else v + "x") for k, v in ref.items()}),
    "classification": lambda ref: "neutral",
    "sorting": lambda ref: ", ".join(map(str, ref[::-1])) if isinstance(ref, list) else str(ref + 1),
    "format": _wrong_format,
    "reading": lambda ref: "ABCD"[("ABCD".index(ref) + 1) % 4],
    "facts": lambda ref: "I am not sure",
    "translation": lambda ref: "mercy",
    "code": lambda ref: ref + "0",
    "tools": lambda ref: json.dumps([{"name": ref["name"], "arguments": {**ref["arguments"], "extra": 1}}]),
}


def item(ref: Any, **kw: Any) -> Item:
    """A hand-built item with this reference."""
    return Item(id="t-0-0", messages=({"role": "user", "content": "q"},), reference=ref, **kw)


# --- registry -----------------------------------------------------------------------------------------------


def test_registry_has_the_thirteen_suites_in_order() -> None:
    assert tuple(s.name for s in ALL) == NAMES
    assert by_name("units") is ALL[2]
    with pytest.raises(KeyError, match="known suites: cleaning, arithmetic"):
        by_name("poetry")


@pytest.mark.parametrize("suite", ALL, ids=lambda s: s.name)
def test_suite_metadata(suite: Suite) -> None:
    # bumped when grading changed: arithmetic accepts thousands separators, facts reads symbols as spaces
    assert suite.version == {"arithmetic": "2", "facts": "2"}.get(suite.name, "1")
    assert suite.description and "\n" not in suite.description
    assert suite.keywords and all(k == k.lower() for k in suite.keywords)


# --- generation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", ALL, ids=lambda s: s.name)
def test_generation_is_seeded_and_well_formed(suite: Suite) -> None:
    items = suite.generate(1, 40)
    assert len(items) == 40
    assert [it.id for it in items] == [f"{suite.name}-1-{i}" for i in range(40)]
    assert all(1 <= it.max_tokens <= (96 if it.tools else 48) and it.messages[0]["role"] == "user" for it in items)
    assert items == suite.generate(1, 40)
    assert suite.generate(1, 5) == items[:5]  # a prefix of a longer run: n does not reshape the sequence
    other = suite.generate(2, 40)
    same = sum(a.messages == b.messages for a, b in zip(items, other, strict=True))
    assert same < 10, f"seeds 1 and 2 share {same} of 40 prompts"
    json.dumps([it.reference for it in items])  # references must be JSON-serialisable


@pytest.mark.parametrize("suite", [s for s in ALL if s.name in ("facts", "translation")], ids=lambda s: s.name)
def test_table_suites_cover_the_table_before_repeating(suite: Suite) -> None:
    items = suite.generate(3, 60)
    assert len({it.messages[0]["content"] for it in items}) == 60
    assert len(suite.generate(3, 200)) == 200


# --- graders: right, wrong, formatting ------------------------------------------------------------------------


@pytest.mark.parametrize("suite", ALL, ids=lambda s: s.name)
def test_grader_accepts_the_reference_and_rejects_wrong_answers(suite: Suite) -> None:
    for it in suite.generate(7, 30):
        right = RIGHT[suite.name](it.reference)
        assert suite.grade(it, right) == 1.0, (it.id, right)
        assert suite.grade(it, f"  {right}\n") == 1.0
        assert suite.grade(it, WRONG[suite.name](it.reference)) < 1.0, it.id
        assert suite.grade(it, "") == 0.0


@pytest.mark.parametrize(("name", "ref", "answer", "expected"), [
    ("arithmetic", 42, "Answer: 42.", 1.0),
    ("arithmetic", 42, "```\n42\n```", 1.0),
    ("arithmetic", 42, "41 + 1 = 42", 0.0),
    ("arithmetic", -9, "-9", 1.0),
    ("units", {"value": "1.5", "units": ["h", "hours"]}, "1.50 hours", 1.0),
    ("units", {"value": "1.5", "units": ["h", "hours"]}, "1.5 km", 0.0),
    ("units", {"value": "3500", "units": ["m"]}, "3,500", 1.0),
    ("units", {"value": "5", "units": ["m"]}, "0,5", 0.0),
    ("dates", "2021-03-05", "2021-03-05.", 1.0),
    ("dates", "2021-03-05", "2021-05-03", 0.0),
    ("classification", "positive", "Positive.", 1.0),
    ("classification", "positive", "positive or negative", 0.0),
    ("sorting", [3, 7, 19], "[3, 7, 19]", 1.0),
    ("sorting", [3, 7, 19], "3,7,19", 1.0),
    ("sorting", [3, 7, 19], "3, 19, 7", 0.0),
    ("sorting", 3, "3", 1.0),
    ("sorting", 3, "three", 0.0),
    ("facts", ["Paris"], "The capital is Paris.", 1.0),
    ("facts", ["Paris"], "Parisian", 0.0),
    ("facts", ["Brasília", "Brasilia"], "brasilia", 1.0),
    ("facts", ["K"], "K", 1.0),
    ("facts", ["K"], "Kr", 0.0),
    ("translation", ["merci"], "Merci beaucoup!", 1.0),
    ("translation", ["merci"], "Mercifully", 0.0),
    ("translation", ["s'il vous plaît"], "S'il vous plait.", 1.0),
    ("translation", ["adiós"], "adios", 1.0),
    ("code", "HELLO", "`HELLO`", 1.0),
    ("code", "HELLO", "Output: HELLO", 1.0),
    ("code", "HELLO", "'HELLO'", 0.0),
    ("code", "3 1", "3 1", 1.0),
])
def test_grader_cases(name: str, ref: Any, answer: str, expected: float) -> None:
    assert by_name(name).grade(item(ref), answer) == expected


@pytest.mark.parametrize(("answer", "expected"), [
    ("Answer: (C)", 1.0), ("C", 1.0), ("C)", 1.0), ("(C)", 1.0), ("The answer is C.", 1.0),
    ("Answer: B", 0.0), ("CD", 0.0), ("ABC", 0.0), ("none of them", 0.0),
])
def test_reading_grader_takes_the_first_standalone_letter(answer: str, expected: float) -> None:
    assert reading.grade(item("C"), answer) == expected


@pytest.mark.parametrize(("ref", "answer", "expected"), [
    ({"rule": "upper_words", "count": 3}, "BLUE COLD SEA", 1.0),
    ({"rule": "upper_words", "count": 3}, "BLUE, COLD SEA.", 1.0),
    ({"rule": "upper_words", "count": 3}, "BLUE SEA", 0.0),
    ({"rule": "upper_words", "count": 3}, "Blue COLD SEA", 0.0),
    ({"rule": "upper_words", "count": 3}, "BLUE COLD SEA\nThat is my reply.", 0.0),
    ({"rule": "exact", "answer": "yes"}, "Yes.", 1.0),
    ({"rule": "exact", "answer": "yes"}, "yes, it is", 0.0),
    ({"rule": "exact", "answer": "tekcor"}, "tekcor", 1.0),
    ({"rule": "exact", "answer": "tekcor"}, "rocket", 0.0),
    ({"rule": "json_answer", "answer": 67}, '```json\n{"answer": 67}\n```', 1.0),
    ({"rule": "json_answer", "answer": 67}, '{"answer": "67"}', 0.0),
    ({"rule": "json_answer", "answer": 67}, '{"result": 67}', 0.0),
    ({"rule": "json_answer", "answer": "ROCKET"}, '{"answer": "ROCKET"}', 1.0),
])
def test_format_grader_checks_the_rule(ref: dict[str, Any], answer: str, expected: float) -> None:
    assert formatting.grade(item(ref), answer) == expected


# --- extraction and the schema checker ------------------------------------------------------------------------


def test_extraction_items_carry_a_strict_json_schema() -> None:
    it = extraction.generate(1, 1)[0]
    assert it.response_format is not None
    assert it.response_format["type"] == "json_schema"
    spec = it.response_format["json_schema"]
    assert spec["strict"] is True and spec["name"] in ("order", "booking", "employee")
    assert spec["schema"]["required"] == list(it.reference)
    assert conforms(it.reference, spec["schema"])


def test_extraction_grader_scores_fields_and_rejects_schema_invalid_json() -> None:
    ref = {"order_id": 4821, "customer": "Maria Lopez", "date": "2023-04-02", "quantity": 3}
    schema = object_schema({"order_id": "integer", "customer": "string", "date": "string", "quantity": "integer"})
    it = item(ref, response_format={"type": "json_schema", "json_schema": {"name": "order", "schema": schema,
                                                                             "strict": True}})
    assert extraction.grade(it, "```json\n" + json.dumps(ref) + "\n```") == 1.0
    assert extraction.grade(it, json.dumps({**ref, "quantity": 4})) == 0.75
    assert extraction.grade(it, json.dumps({**ref, "order_id": "4821"})) == 0.0  # wrong type
    assert extraction.grade(it, json.dumps({**ref, "quantity": True})) == 0.0  # a bool is not an integer
    assert extraction.grade(it, json.dumps({k: v for k, v in ref.items() if k != "date"})) == 0.0  # missing key
    assert extraction.grade(it, json.dumps({**ref, "note": "x"})) == 0.0  # additional property
    assert extraction.grade(it, json.dumps([ref])) == 0.0
    assert extraction.grade(it, "order_id: 4821") == 0.0


# --- code -----------------------------------------------------------------------------------------------------


def test_code_snippets_run_with_restricted_builtins() -> None:
    assert code_output.run_snippet("x = 17\ny = 5\nprint(x // y, x % y)") == "3 2"
    assert code_output.run_snippet('s = "minimill"\nprint(s[1:4].upper())') == "INI"
    with pytest.raises(NameError):
        code_output.run_snippet("open('/etc/passwd')")
    assert all(it.reference and "\n" not in it.reference for it in code_output.generate(1, 50))


# --- W1 cleaning ----------------------------------------------------------------------------------------------


def test_cleaning_prompt_is_the_workload_prefix_plus_the_row() -> None:
    it = cleaning.generate(1, 1)[0]
    text = it.messages[0]["content"]
    assert text.startswith("You are a careful data-cleaning assistant")
    prefix, row = text.rsplit("\n", 1)
    assert prefix.endswith("Now clean the following row.")
    assert clean_row(row) == it.reference and len(it.reference) == 7


@pytest.mark.skipif(not SHARED_PREFIX.exists(), reason="the shared workloads folder is not checked out")
def test_shipped_prefix_matches_the_shared_workload() -> None:
    assert cleaning.prefix() == SHARED_PREFIX.read_text(encoding="utf-8")


def test_reference_cleaner_reproduces_the_prefix_examples() -> None:
    pairs = re.findall(r"^Input: (.*)\nOutput: (.*)$", cleaning.prefix(), re.MULTILINE)
    assert len(pairs) == 3
    for raw, cleaned in pairs:
        assert ",".join(clean_row(raw)) == cleaned
    assert clean_row(pairs[0][0]) == ["42", "John Smith", "john.smith@example.com", "+15550102233", "2021-03-04",
                                      "United States", "1234.50"]


def test_generated_rows_clean_to_what_the_generator_intended() -> None:
    rng = random.Random(11)
    for _ in range(1000):
        row, expected = messy_row(rng)
        assert clean_row(row) == expected, row


def test_split_row_rejoins_an_unquoted_value_and_pads_short_rows() -> None:
    assert split_row('ID1, "smith, JOHN" , a@b.co , , 03/04/2021 , usa , $1,234.5')[1:] == [
        "smith, JOHN", "a@b.co", "", "03/04/2021", "usa", "$1,234.5"]
    assert split_row("ID1,anna") == ["ID1", "anna", "", "", "", "", ""]


@pytest.mark.parametrize(("raw", "expected"), [
    ("1.234,5", "1234.50"), ("1,234.5", "1234.50"), ('"1.234,50 €"', "1234.50"), ("12,5", "12.50"),
    ("1.234.567,8", "1234567.80"), ("2.5k", "2500.00"), ("4K", "4000.00"), ("$2.5k", "2500.00"),
    ("(12)", "-12.00"), ("(1,063.5)", "-1063.50"), ("-7.66 EUR", "-7.66"), ("GBP 12", "12.00"), ("£3.456", "3.46"),
    ("USD 45", "45.00"), ("abc", "0.00"), ("", "0.00"), ("(0)", "0.00"), ("1.2.3", "0.00"),
])
def test_lifetime_value(raw: str, expected: str) -> None:
    assert clean_lifetime_value(raw) == expected


@pytest.mark.parametrize(("raw", "country", "expected"), [
    ("03/04/2021", "United States", "2021-03-04"), ("03/04/2021", "Germany", "2021-04-03"),
    ("03/04/2021", "Canada", "2021-04-03"), ("03/04/2021", "UNKNOWN", "2021-04-03"),
    ("12/25/99", "United States", "1999-12-25"), ("25/12/99", "United Kingdom", "1999-12-25"),
    ("31/02/2020", "Germany", "INVALID"), ("02/30/2019", "United States", "INVALID"), ("31 Apr 2020", "", "INVALID"),
    ("3 Apr 21", "", "2021-04-03"), ("3 Apr 29", "", "2029-04-03"), ("3 Apr 30", "", "1930-04-03"),
    ("1 Jan 00", "", "2000-01-01"), ("April 3rd 2021", "", "2021-04-03"), ("2021.04.03", "", "2021-04-03"),
    ("20210403", "", "2021-04-03"), ("2021.13.05", "", "INVALID"), ("someday", "", "INVALID"), ("", "", "INVALID"),
])
def test_signup_date(raw: str, country: str, expected: str) -> None:
    assert clean_signup_date(raw, country) == expected


@pytest.mark.parametrize(("raw", "country", "expected"), [
    ("(555) 010-2233", "United States", "+15550102233"), ("555.010.2233", "Canada", "+15550102233"),
    ("(555) 010-2233", "Germany", "5550102233"), ("0048 22 123 45 67", "Poland", "+48221234567"),
    ("0049 162 1191062", "United States", "+491621191062"), ("+44.5734.918627", "United Kingdom", "+445734918627"),
    ("+1 555-010-2233", "United States", "+15550102233"), ("12", "", "INVALID"), ("555-12", "", "INVALID"),
    ("", "United States", ""),
])
def test_phone(raw: str, country: str, expected: str) -> None:
    assert clean_phone(raw, country) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("smith, JOHN", "John Smith"), ("dr. anna   KOWALSKA", "Anna Kowalska"), ("Kowalska, Prof. Anna", "Anna Kowalska"),
    ("jANE   o'neil", "Jane O'Neil"), ("MARIE-CLAIRE dupont", "Marie-Claire Dupont"), ("Mrs ZOË  müller", "Zoë Müller"),
    ("  Mr tom  jones ", "Tom Jones"), ("", "UNKNOWN"), ("Mr", "UNKNOWN"),
])
def test_full_name(raw: str, expected: str) -> None:
    assert clean_full_name(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("John.Smith(at)Example(dot)com", "john.smith@example.com"), ("anna at mail dot pl", "anna@mail.pl"),
    ("INGRID.IVANOVA at yahoo dot fr", "ingrid.ivanova@yahoo.fr"), ("li.patel(at)yahoo.fr", "li.patel@yahoo.fr"),
    (" ANNA@WEB.DE ", "anna@web.de"), ("not-an-email", "INVALID"), ("tom.patel@", "INVALID"),
    ("@example.com", "INVALID"), ("a@@b.com", "INVALID"), ("anna@localhost", "INVALID"), ("", "INVALID"),
])
def test_email(raw: str, expected: str) -> None:
    assert clean_email(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("ID00042", "42"), ("#000", "0"), ("cust-7", "7"), ("C475", "475"), ("n/a", "UNKNOWN"), ("", "UNKNOWN"),
])
def test_customer_id(raw: str, expected: str) -> None:
    assert clean_customer_id(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("usa", "United States"), ("U.S.", "United States"), ("Etats-Unis", "United States"),
    ("England", "United Kingdom"), ("GB", "United Kingdom"), ("Deutschland", "Germany"), ("España", "Spain"),
    ("Espana", "Spain"), ("Nippon", "Japan"), ("brasil", "Brazil"), ("Aus", "Australia"), ("ca", "Canada"),
    ("Polska", "Poland"), ("Narnia", "UNKNOWN"), ("", "UNKNOWN"),
])
def test_country(raw: str, expected: str) -> None:
    assert clean_country(raw) == expected


def test_cleaning_grader_gives_partial_credit_per_field() -> None:
    it = dataclasses.replace(cleaning.generate(1, 1)[0],
                             reference=["42", "John Smith", "john.smith@example.com", "+15550102233", "2021-03-04",
                                        "United States", "1234.50"])
    right = "42,John Smith,john.smith@example.com,+15550102233,2021-03-04,United States,1234.50"
    assert cleaning.grade(it, right) == 1.0
    assert cleaning.grade(it, "Output: " + right + "\nInput: next") == 1.0
    assert cleaning.grade(it, "42, John Smith, john.smith@example.com, +15550102233, 2021-03-04, United States, "
                              "1234.50") == 1.0
    assert cleaning.grade(it, right.replace("1234.50", "1234.5")) == pytest.approx(6 / 7)
    assert cleaning.grade(it, right.replace("+1555", "555").replace("John Smith", "Smith John")) == pytest.approx(5 / 7)
    assert cleaning.grade(it, right.replace(",United States", "")) == 0.0  # six fields: not parseable
    assert cleaning.grade(it, "I cannot clean this row.") == 0.0


def test_graders_fixed_after_review() -> None:
    arithmetic, facts = by_name("arithmetic"), by_name("facts")
    big = next(i for i in arithmetic.generate(1, 200) if abs(i.reference) >= 1000)
    assert arithmetic.grade(big, f"{big.reference:,}") == 1.0
    assert arithmetic.grade(big, f"{big.reference // 10},{abs(big.reference) % 10}") == 0.0  # not a separator
    boiling = next(i for i in facts.generate(1, 84) if "100" in i.reference)
    assert facts.grade(boiling, "100°C") == 1.0 and facts.grade(boiling, "1000°C") == 0.0


def test_tools_items_offer_the_answering_function_and_grade_calls_exactly() -> None:
    from minimill.evals.suites import tools

    for it in tools.generate(1, 30):
        offered = [t["function"]["name"] for t in it.tools]
        assert it.reference["name"] in offered and 3 <= len(offered) <= 4 and len(set(offered)) == len(offered)
        for value in it.reference["arguments"].values():  # every argument is stated in the request
            assert str(value) in it.messages[0]["content"]
        ref = it.reference
        other = next(name for name in offered if name != ref["name"])
        assert tools.grade(it, json.dumps([{"name": other, "arguments": ref["arguments"]}])) == 0.0
        assert tools.grade(it, json.dumps([ref, ref])) == 0.0  # one call, not two
        wrong = {k: (v + 1 if isinstance(v, int) else v + "x") for k, v in ref["arguments"].items()}
        assert tools.grade(it, json.dumps([{"name": ref["name"], "arguments": wrong}])) == 0.5
        assert tools.grade(it, json.dumps(ref)) == 0.0  # text, not a list of calls
