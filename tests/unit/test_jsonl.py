"""Reading batch input files: whole-file and per-line problems."""

from __future__ import annotations

import json
import random

from minimill.batch.jsonl import parse_input

CHAT = "/v1/chat/completions"


def request(custom_id: str, url: str = CHAT, **extra: object) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url,
                       "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, **extra})


def test_per_line_problems_are_numbered_and_the_rest_is_kept() -> None:
    raw = "\n".join([
        request("a"),
        "{not json",
        request("b", url="/v1/completions"),
        request("a"),
        json.dumps({"method": "POST", "url": CHAT, "body": {}}),
        "",
        json.dumps({"custom_id": "c", "url": CHAT, "body": "text"}),
        request("d", method="GET"),
        request("e"),
    ]).encode()
    lines, problem = parse_input(raw, CHAT, max_lines=100)
    assert problem is None
    codes = {line.number: line.problem.code if line.problem else None for line in lines}
    assert codes == {1: None, 2: "invalid_json_line", 3: "invalid_url", 4: "duplicate_custom_id",
                     5: "missing_custom_id", 7: "missing_body", 8: "invalid_method", 9: None}
    assert all(f"line {n}" in line.problem.message for n, line in ((x.number, x) for x in lines) if line.problem)
    assert lines[0].body is not None and lines[0].custom_id == "a"


def test_whole_file_problems() -> None:
    assert parse_input(b"\xff\xfe", CHAT, 10)[1].code == "invalid_file_format"  # type: ignore[union-attr]
    assert parse_input(b"\n  \n", CHAT, 10)[1].code == "empty_file"  # type: ignore[union-attr]
    assert parse_input(b"a,b,c\n1,2,3\n", CHAT, 10)[1].code == "invalid_file_format"  # type: ignore[union-attr]
    many = "\n".join(request(str(n)) for n in range(5)).encode()
    assert parse_input(many, CHAT, 4)[1].code == "too_many_requests"  # type: ignore[union-attr]


def codes_of(raw: bytes) -> dict[int, str | None]:
    lines, problem = parse_input(raw, CHAT, max_lines=100)
    assert problem is None, problem
    return {line.number: line.problem.code if line.problem else None for line in lines}


def test_a_deeply_nested_line_is_a_bad_line_and_the_others_still_run() -> None:
    raw = "\n".join([request("a"), "[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000,
                     request("b")]).encode()
    lines, problem = parse_input(raw, CHAT, max_lines=100)
    assert problem is None
    assert [(line.number, line.problem.code if line.problem else None) for line in lines] == [
        (1, None), (2, "invalid_json_line"), (3, "invalid_json_line"), (4, None)]
    for line in lines[1:3]:
        assert line.problem is not None
        assert line.problem.message == f"line {line.number} is not valid JSON: it is nested too deeply"
    only_deep = parse_input(("[" * 100_000).encode(), CHAT, max_lines=100)[1]
    assert only_deep is not None and only_deep.code == "invalid_file_format"


def test_lines_that_parse_but_are_not_requests_are_bad_lines() -> None:
    odd = ["1e999999", '"a string"', "[1, 2]", "123", "null", "1" * 5000, "-" + "9" * 10_000, "\x00",
           '{"a": 1}\x00', json.dumps({"custom_id": "\ud800", "url": CHAT, "body": {}}),
           json.dumps({"custom_id": "x", "url": CHAT, "body": {"messages": [{"content": "\udfff"}]}})]
    raw = "\n".join([request("ok"), *odd]).encode()
    codes = codes_of(raw)
    assert codes == {1: None, **{n: "invalid_json_line" for n in range(2, len(odd) + 2)}}
    lines, _ = parse_input(raw, CHAT, max_lines=100)
    assert "too many digits" in (lines[6].problem.message if lines[6].problem else "")
    assert "surrogate" in (lines[10].problem.message if lines[10].problem else "")
    # A surrogate pair escapes one character: that is text, and the line is fine.
    assert codes_of(json.dumps({"custom_id": "\U0001f600", "method": "POST", "url": CHAT, "body": {}}).encode()) \
        == {1: None}


def test_lines_end_at_newline_only() -> None:
    # JSON lets U+2028, U+0085 and form feeds stand unescaped in a string: they do not end a line.
    body = {"model": "m", "messages": [{"role": "user", "content": "a\u2028b\x85c\x0cd\x1ee"}]}
    line = json.dumps({"custom_id": "a", "method": "POST", "url": CHAT, "body": body}, ensure_ascii=False)
    lines, problem = parse_input(f"{line}\r\n{request('b')}\r\n".encode(), CHAT, max_lines=100)
    assert problem is None and [(x.number, x.problem) for x in lines] == [(1, None), (2, None)]
    assert lines[0].body == body


def test_error_messages_stay_short_for_huge_fields() -> None:
    raw = "\n".join([request("a"), request("b", method="G" * 1_000_000), request("c", url="/" * 1_000_000),
                     json.dumps({"custom_id": "d", "method": ["POST"] * 100_000, "url": CHAT, "body": {}}),
                     request("x" * 1_000_000), request("x" * 1_000_000)]).encode()
    lines, problem = parse_input(raw, CHAT, max_lines=100)
    assert problem is None
    assert [line.problem.code if line.problem else None for line in lines] == [
        None, "invalid_method", "invalid_url", "invalid_method", None, "duplicate_custom_id"]
    assert all(len(line.problem.message) < 200 for line in lines if line.problem)


def test_random_bytes_never_raise() -> None:
    rng = random.Random(7)
    pieces = [b"{", b"}", b"[", b"]", b'"', b":", b",", b"\\u", b"d800", b"1e999", b"9" * 5000, b"\x00", b"\xff",
              b"\xed\xa0\x80", b"\n", b"\r\n", b"\xe2\x80\xa8", b" ", b'"custom_id"', b'"body"', b"null", b"true"]
    for _ in range(300):
        raw = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 60)))
        lines, problem = parse_input(raw, CHAT, max_lines=100)
        assert (problem is None) == bool(lines)
