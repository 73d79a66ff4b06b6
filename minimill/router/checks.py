"""The cascade's check: is a cheap model's answer good enough to return, or does it escalate?"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import regex

from minimill.errors import InvalidRequest

GRADERS = ("json", "integer", "number", "nonempty", "regex:<pattern>")
# A user's pattern runs against each answer: `regex` can stop one that backtracks without end.
REGEX_SECONDS = 0.1
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an answer passed, and why not."""

    passed: bool
    reason: str = "passed"


def validate_grader(name: str | None) -> None:
    """InvalidRequest unless `name` is a known grader (or None)."""
    if name is None or name in GRADERS[:4]:
        return
    if name.startswith("regex:"):
        try:
            regex.compile(name[6:])
        except Exception as exc:  # regex.error, and OverflowError/RecursionError on absurd patterns
            raise InvalidRequest(f"metadata.grader: bad regular expression: {exc}", param="metadata") from None
        return
    raise InvalidRequest(f"metadata.grader must be one of {', '.join(GRADERS)}", param="metadata")


def check(text: str, *, response_format: Mapping[str, Any] | None, mean_logprob: float | None,
          min_confidence: float, grader: str | None) -> Verdict:
    """The answer fails when it breaks its response_format (not JSON, or not valid against the schema),
    when the user's named grader rejects it, or when the model was unsure (mean token log-probability
    below `min_confidence`)."""
    kind = (response_format or {}).get("type")
    if kind in ("json_object", "json_schema"):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return Verdict(False, "response_format: the answer is not JSON")
        if not isinstance(value, dict):
            return Verdict(False, "response_format: the answer is not a JSON object")
        schema = ((response_format or {}).get("json_schema") or {}).get("schema")
        if kind == "json_schema" and schema:
            try:
                jsonschema.validate(value, schema)
            except jsonschema.ValidationError as exc:
                return Verdict(False, f"response_format: schema violated ({exc.message[:120]})")
            except Exception:  # noqa: BLE001 - a schema jsonschema cannot use (bad, unresolvable refs) was
                pass           # already accepted for generation: the answer is not escalated over it
    if grader is not None and not _graded(grader, text.strip()):
        return Verdict(False, f"grader {grader} rejected the answer")
    if mean_logprob is not None and mean_logprob < min_confidence:
        return Verdict(False, f"low confidence (mean log-probability {mean_logprob:.2f} < {min_confidence:.2f})")
    return Verdict(True)


def _graded(grader: str, text: str) -> bool:
    if grader == "json":
        try:
            json.loads(text)
        except (ValueError, RecursionError):
            return False
        return True
    if grader == "integer":
        return _INTEGER.fullmatch(text) is not None
    if grader == "number":
        return _NUMBER.fullmatch(text.replace(",", "")) is not None
    if grader == "nonempty":
        return bool(text)
    try:
        return regex.fullmatch(grader[6:], text, flags=regex.DOTALL, timeout=REGEX_SECONDS) is not None
    except TimeoutError:
        return False  # a pattern that cannot decide in time does not pass the answer
