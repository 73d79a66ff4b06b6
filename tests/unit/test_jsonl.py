"""Reading batch input files: whole-file and per-line problems."""

from __future__ import annotations

import json

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
