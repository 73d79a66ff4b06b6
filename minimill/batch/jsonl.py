"""Reading a batch input file: OpenAI's JSONL lines `{custom_id, method, url, body}`.

Problems with the whole file (not UTF-8 text, no JSON object on any line, too many lines) fail the
batch; problems with one line (bad JSON, missing or repeated custom_id, wrong method or endpoint,
no body; nested too deeply to parse; a string that is not Unicode text) are reported with the line's
number and the other lines still run. Neither function raises on any input bytes: every problem comes
back as a `FileProblem` or a `LineProblem`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LineProblem:
    """Why one line cannot run: an OpenAI-style error code and message, and the field at fault."""

    code: str
    message: str
    param: str | None = None


@dataclass(frozen=True, slots=True)
class InputLine:
    """One non-blank line of the input (numbered from 1): its request body, or the problem with it."""

    number: int
    custom_id: str | None
    body: dict[str, Any] | None
    problem: LineProblem | None = None


@dataclass(frozen=True, slots=True)
class FileProblem:
    """Why a whole input file is refused (the batch fails at validation)."""

    code: str
    message: str
    line: int | None = None

    def as_dict(self) -> dict[str, object]:
        """OpenAI's `errors.data[]` entry."""
        return {"code": self.code, "message": self.message, "param": None, "line": self.line}


def parse_input(raw: bytes, endpoint: str, max_lines: int) -> tuple[list[InputLine], FileProblem | None]:
    """Every non-blank line, checked on its own; or the reason the file as a whole is unusable."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [], FileProblem("invalid_file_format", f"the input file is not UTF-8 text (byte {exc.start})")
    # JSONL lines end at "\n" only: str.splitlines() would also split at U+2028, U+0085 and friends,
    # which a JSON string may hold unescaped, and so break a valid line in two.
    split = (line.removesuffix("\r") for line in text.split("\n"))
    numbered = [(n, line) for n, line in enumerate(split, start=1) if line.strip()]
    if not numbered:
        return [], FileProblem("empty_file", "the input file has no requests")
    if len(numbered) > max_lines:
        return [], FileProblem("too_many_requests",
                               f"the input file has {len(numbered)} requests; a batch may have at most {max_lines}")
    lines, seen = [], set()
    for number, line in numbered:
        parsed = _line(number, line, endpoint)
        if parsed.custom_id is not None and parsed.problem is None:
            if parsed.custom_id in seen:
                parsed = InputLine(number, parsed.custom_id, None, LineProblem(
                    "duplicate_custom_id", f"line {number}: custom_id {_brief(parsed.custom_id)} is used by an "
                    "earlier line; each request needs its own", "custom_id"))
            seen.add(parsed.custom_id)
        lines.append(parsed)
    if all(line.problem is not None and line.problem.code == "invalid_json_line" for line in lines):
        return [], FileProblem("invalid_file_format",
                               "the input file is not JSONL: no line is a JSON object (one request per line)", 1)
    return lines, None


_KINDS = {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number"}


def _brief(value: object) -> str:
    """A field's value for an error message: a string cut short (it may be megabytes), else its JSON kind."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    return "null" if value is None else _KINDS.get(type(value), type(value).__name__)


def _decode(line: str) -> tuple[Any, str | None]:
    """The line's JSON value, or None and why it is not valid JSON text."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, exc.msg
    except RecursionError:  # the C parser gives up past the interpreter's recursion limit
        return None, "it is nested too deeply"
    except ValueError:  # an integer past sys.get_int_max_str_digits()
        return None, "a number in it has too many digits"
    # An escaped lone surrogate ("\ud800") parses, but is not text: storing or tokenizing it would fail.
    if "\\u" in line:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return None, "a string in it has an unpaired surrogate escape (it is not Unicode text)"
        except RecursionError:
            return None, "it is nested too deeply"
    return value, None


def _line(number: int, line: str, endpoint: str) -> InputLine:
    value, why = _decode(line)
    if why is not None:
        return InputLine(number, None, None,
                         LineProblem("invalid_json_line", f"line {number} is not valid JSON: {why}"))
    if not isinstance(value, dict):
        return InputLine(number, None, None, LineProblem("invalid_json_line", f"line {number} is not a JSON object"))
    custom_id = value.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return InputLine(number, None, None, LineProblem(
            "missing_custom_id", f"line {number} needs a non-empty string custom_id", "custom_id"))

    def problem(code: str, message: str, param: str) -> InputLine:
        return InputLine(number, custom_id, None, LineProblem(code, f"line {number}: {message}", param))

    method = value.get("method", "POST")
    if not isinstance(method, str) or method.upper() != "POST":
        return problem("invalid_method", f"method must be POST, got {_brief(method)}", "method")
    url = value.get("url")
    if url != endpoint:
        return problem("invalid_url", f"url {_brief(url)} is not this batch's endpoint '{endpoint}'", "url")
    body = value.get("body")
    if not isinstance(body, dict):
        return problem("missing_body", "body must be a JSON object (the request to run)", "body")
    return InputLine(number, custom_id, body)
