"""Turning sampled tokens into text a client may see: incremental UTF-8, stop strings, and whether a choice
has finished.

Pure functions and a small state object per choice; no llama.cpp here.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence

from minimill.engine.types import FinishReason, SamplingParams


def held_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class TextStream:
    """One choice's text: bytes in, releasable text out; stop strings are cut and never emitted.

    `push` returns the text that can be shown now; text that might begin a stop string is held
    back until the next piece decides. After a stop string is seen, `stopped` is True.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""
        self.stopped = False

    def push(self, piece: bytes) -> str:
        """Add a token's bytes; return the text now safe to emit."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(piece)
        cut = min((i for i in (self._held.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            text, self._held = self._held[:cut], ""
            return text
        keep = held_suffix(self._held, self._stops)
        text = self._held[: len(self._held) - keep]
        self._held = self._held[len(text):]
        return text

    def flush(self) -> str:
        """The generation ended without a stop string: release everything held."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text


def next_text(text: TextStream, token: int, params: SamplingParams, *, end_of_generation: bool,
              piece: Callable[[int], bytes], out_of_room: bool) -> tuple[str, FinishReason | None]:
    """The text a sampled `token` adds to a choice and whether the choice ends with it: "stop" at an
    end-of-generation token (unless `ignore_eos`), a stop token id or a stop string; "length" when the choice
    is `out_of_room` (its max_tokens generated, or the context full). A finished choice releases what
    `text` held back."""
    finish: FinishReason | None = None
    added = ""
    if (not params.ignore_eos and end_of_generation) or token in params.stop_token_ids:
        finish = "stop"
    else:
        added = text.push(piece(token))
        if text.stopped:
            finish = "stop"
        elif out_of_room:
            finish = "length"
    if finish is not None and not text.stopped:
        added += text.flush()
    return added, finish
