"""A tiny JSON Schema checker for the subset the suites use: objects of string and integer properties."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from minimill.evals.suites._common import unfence


def object_schema(properties: Mapping[str, str]) -> dict[str, Any]:
    """A strict-mode object schema: every named property required, of the given type, and nothing else."""
    return {"type": "object", "properties": {k: {"type": t} for k, t in properties.items()},
            "required": list(properties), "additionalProperties": False}


def response_format(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI wire shape of a strict JSON-schema response format."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": dict(schema), "strict": True}}


def conforms(value: Any, schema: Mapping[str, Any]) -> bool:
    """Whether `value` satisfies `schema` (types object/string/integer, properties, required,
    additionalProperties: false). Booleans are not integers, as in JSON Schema."""
    kind = schema.get("type")
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind != "object" or not isinstance(value, dict):
        return False
    properties: Mapping[str, Any] = schema.get("properties", {})
    if any(key not in value for key in schema.get("required", ())):
        return False
    if schema.get("additionalProperties", True) is False and any(key not in properties for key in value):
        return False
    return all(conforms(value[key], sub) for key, sub in properties.items() if key in value)


def parse_json(answer: str) -> Any:
    """The JSON value an answer consists of (Markdown code fences allowed around it), or None if it is not JSON."""
    try:
        return json.loads(unfence(answer))
    except ValueError:
        return None
