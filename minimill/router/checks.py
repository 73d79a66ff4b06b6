"""The cascade's check: is a cheap model's answer good enough to return, or does it escalate?"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import jsonschema
import regex
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.validators import extend, validator_for
from referencing import Registry
from referencing.exceptions import NoSuchResource

from minimill.errors import InvalidRequest

GRADERS = ("json", "integer", "number", "nonempty", "regex:<pattern>")
# A user's pattern runs against each answer: `regex` can stop one that backtracks without end.
REGEX_SECONDS = 0.1
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
log = logging.getLogger(__name__)


def _refuse(uri: str) -> NoReturn:
    """A user's schema must never make the server fetch a URL or read a file: every `$ref` outside
    the schema itself is unresolvable (jsonschema still finds the JSON Schema metaschemas it ships)."""
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs classes that mypy cannot see through


_LOCAL_ONLY: Registry[Any] = Registry(retrieve=_refuse)  # type: ignore[call-arg]


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
        violation = _schema_violation(value, schema) if kind == "json_schema" and schema else None
        if violation is not None:
            return Verdict(False, f"response_format: schema violated ({violation[:120]})")
    if grader is not None and not _graded(grader, text.strip()):
        return Verdict(False, f"grader {grader} rejected the answer")
    if mean_logprob is not None and mean_logprob < min_confidence:
        return Verdict(False, f"low confidence (mean log-probability {mean_logprob:.2f} < {min_confidence:.2f})")
    return Verdict(True)


class _Undecided(Exception):
    """A schema's pattern could not decide in time."""


def _search(pattern: str, text: str) -> bool:
    """`re.search` as JSON Schema means it, with a time limit: a user's pattern may backtrack without end."""
    try:
        return regex.search(pattern, text, timeout=REGEX_SECONDS) is not None
    except TimeoutError:
        raise _Undecided(pattern) from None


def _pattern(validator: Any, pattern: str, instance: object, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):  # type: ignore[arg-type]
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: object,
                        schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():  # type: ignore[attr-defined]
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, allowed: Any, instance: object, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    known, patterns = schema.get("properties", {}), list(schema.get("patternProperties", {}))
    extras = sorted(k for k in instance if k not in known  # type: ignore[attr-defined]
                    and not any(_search(p, k) for p in patterns))
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)  # type: ignore[index]
    elif not allowed and extras:
        yield ValidationError(f"additional properties are not allowed ({', '.join(map(repr, extras))})")


# jsonschema's own keywords run `re.search` unbounded; these three are the ones that search user data.
_BOUNDED = {"pattern": _pattern, "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties}


@functools.cache
def _bounded(cls: Any) -> Any:
    """`cls` (a draft's validator) with the pattern keywords bounded in time."""
    return extend(cls, _BOUNDED)


def _schema_violation(value: object, schema: Any) -> str | None:
    """How `value` breaks `schema`, or None when it conforms or when the schema cannot be used: bad
    (a `pattern` that is not a regular expression), nested past the recursion limit, or with a `$ref`
    to anything outside itself. Such a schema was already accepted for generation, so the answer is
    not escalated over it. Never touches the network or the file system."""
    if not isinstance(schema, dict):
        return None
    # validator_for() looks `$schema` up in a dict: an unhashable value would raise TypeError.
    default = jsonschema.Draft202012Validator
    cls = validator_for(schema, default) if isinstance(schema.get("$schema"), str) else default
    try:
        cls.check_schema(schema)
        error = best_match(_bounded(cls)(schema, registry=_LOCAL_ONLY).iter_errors(value))
    except _Undecided as exc:
        return f"a pattern could not decide in {REGEX_SECONDS:g} s ({str(exc)[:40]!r})"
    except Exception as exc:  # noqa: BLE001 - SchemaError, Unresolvable, RecursionError, and on odd schemas
        # (draft 3's `extends` with a `$ref`) AttributeError and kin from inside jsonschema: all mean unusable.
        log.info("response_format schema not checked: %s", type(exc).__name__)  # not the schema: user data
        return None
    return None if error is None else error.message


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
