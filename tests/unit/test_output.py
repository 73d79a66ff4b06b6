"""TextStream: stop strings cut across pieces and never emitted; UTF-8 split across tokens. next_text: when a
choice finishes, and what it releases."""

from __future__ import annotations

import pytest

from minimill.engine.output import TextStream, held_suffix, next_text
from minimill.engine.types import SamplingParams


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


PIECES = {1: b"Hel", 2: b"lo", 3: b" EN", 4: b"D", 9: b"<eos>"}


def step(stream: TextStream, token: int, params: SamplingParams, *,
         out_of_room: bool = False) -> tuple[str, str | None]:
    return next_text(stream, token, params, end_of_generation=token == 9, piece=PIECES.__getitem__,
                     out_of_room=out_of_room)


def test_an_end_of_generation_token_stops_and_releases_what_was_held() -> None:
    stream = TextStream(["ENDX"])
    assert step(stream, 1, SamplingParams()) == ("Hel", None)
    assert step(stream, 3, SamplingParams()) == (" ", None)  # "EN" may start "ENDX": held back
    assert step(stream, 9, SamplingParams()) == ("EN", "stop")  # released; the eos piece itself is never text


def test_ignore_eos_makes_the_end_token_text_and_stop_ids_still_stop() -> None:
    params = SamplingParams(ignore_eos=True, stop_token_ids=(2,))
    stream = TextStream([])
    assert step(stream, 9, params) == ("<eos>", None)
    assert step(stream, 2, params) == ("", "stop")


def test_a_stop_string_across_tokens_stops_before_it_and_length_flushes() -> None:
    stream = TextStream(["END"])
    assert step(stream, 1, SamplingParams()) == ("Hel", None)
    assert step(stream, 3, SamplingParams()) == (" ", None)
    assert step(stream, 4, SamplingParams()) == ("", "stop")  # the stop string is cut, never sent
    stream = TextStream(["END"])
    assert step(stream, 3, SamplingParams(), out_of_room=True) == (" EN", "length")  # nothing held at the end
