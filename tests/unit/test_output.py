"""TextStream: stop strings cut across pieces and never emitted; UTF-8 split across tokens."""

from __future__ import annotations

import pytest

from minimill.engine.output import TextStream, held_suffix


def feed(stream: TextStream, pieces: list[bytes]) -> str:
    return "".join(stream.push(p) for p in pieces) + stream.flush()


@pytest.mark.parametrize(("pieces", "stops", "expected", "stopped"), [
    ([b"Hello", b" wor", b"ld", b"!"], ["world"], "Hello ", True),
    ([b"ab", b"cEN", b"Dxyz"], ["END"], "abc", True),
    ([b"ab", b"cE", b"Nope"], ["END"], "abcENope", False),
    ([b"\xe2\x82", b"\xac", b" euro"], [], "\u20ac euro", False),
    ([b"one", b"two"], ["", "two"], "one", True),
])
def test_stop_strings(pieces: list[bytes], stops: list[str], expected: str, stopped: bool) -> None:
    stream = TextStream(stops)
    assert feed(stream, pieces) == expected
    assert stream.stopped is stopped


def test_text_is_held_only_while_it_may_start_a_stop() -> None:
    stream = TextStream(["STOP"])
    assert stream.push(b"abcST") == "abc"
    assert stream.push(b"x") == "STx"
    assert held_suffix("abcSTO", ["STOP", "TOPS"]) == 3
