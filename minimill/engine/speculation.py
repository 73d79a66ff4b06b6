"""Speculative decoding: drafts looked up in a sequence's own context (prompt lookup), in a prediction the user
sent (OpenAI's Predicted Outputs), or guessed by a draft model (`draft_model`, run by the engine before the step
is planned), and how many to propose.

A draft is only a guess at the next tokens. The scheduler puts it after the sequence's last token in the step's
one `llama_decode`; the runner samples every position with the sequence's own sampler chain and keeps the
drafted tokens for as long as the chain drew exactly them, then the first token it drew otherwise (or one past
the draft). With a draft that proposes one token with certainty, drawing x ~ p and keeping the draft when x
equals it *is* the standard rejection rule (accept with p(d), else draw from p without d, renormalised), so the
output is what plain decoding gives, token for token with greedy sampling and in distribution otherwise
(`verify`). Rejected positions' KV is removed before the next step.

Pure Python, no llama.cpp: the scheduler holds a `Drafter` per sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

DraftSource = Literal["ngram", "prediction", "draft"]
# The longest suffix looked up; a single token is too weak a clue in one's own context, not in a prediction.
MAX_NGRAM = 4
MIN_NGRAM_CONTEXT = 2
# How fast a sequence forgets its past acceptance (per step), and what it believes before any: one kept of two.
FORGET = 0.7
PRIOR_KEPT, PRIOR_MISSED = 1.0, 1.0
# A sequence whose drafts do not pay rests this many steps before it tries one token again, twice as long after
# each probe that did not pay either (up to 2**MAX_BACKOFF times): a probe costs a row, and a draft model's probe
# also its catching up on the tokens decoded meanwhile.
REST_STEPS = 8
MAX_BACKOFF = 5
# Draft tokens before any step has been measured.
PRIOR_DRAFT = 2
# A step size not measured in this many steps is measured again before drafts are weighed against it: a step's
# cost moves with the KV its attention spans, and sizes that drafting always grows past are never seen otherwise.
STALE_STEPS = 16
# The chance of keeping a draft token that a perfect drafter has: where even it would not pay, a draft model is
# not asked at all (its catching up on each new prompt alone costs a prefill of the small model).
BEST_ALPHA = 0.95


@dataclass(frozen=True, slots=True)
class Speculation:
    """What a sequence drafts, resolved against the server's defaults: prompt lookup on or off, the draft model
    on or off, at most `max_draft` tokens a step, and a prediction's tokens (empty: none)."""

    ngram: bool
    max_draft: int
    prediction: tuple[int, ...] = ()
    model: bool = False

    @property
    def enabled(self) -> bool:
        """Whether anything will be drafted."""
        return self.max_draft > 0 and (self.ngram or self.model or bool(self.prediction))


class NgramIndex:
    """For each n-gram (n <= MAX_NGRAM) of a token list, where the token after its latest occurrence is."""

    __slots__ = ("tokens", "_next")

    def __init__(self, tokens: Sequence[int] = ()) -> None:
        self.tokens: list[int] = []
        self._next: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens; each n-gram that now has a token after it points there."""
        for token in tokens:
            end = len(self.tokens)
            for n in range(1, min(MAX_NGRAM, end) + 1):
                self._next[tuple(self.tokens[end - n:end])] = end
            self.tokens.append(token)

    def after(self, query: Sequence[int], min_n: int = 1) -> int | None:
        """Where the token after the latest occurrence of the longest suffix of `query` (at least `min_n`
        tokens long) found here is; None when none is."""
        for n in range(min(MAX_NGRAM, len(query)), min_n - 1, -1):
            at = self._next.get(tuple(query[len(query) - n:]))
            if at is not None:
                return at
        return None

    def continuation(self, query: Sequence[int], k: int, min_n: int = 1) -> tuple[int, ...]:
        """Up to `k` tokens that followed the latest occurrence of the longest suffix of `query` found here."""
        at = self.after(query, min_n)
        return () if at is None else tuple(self.tokens[at:at + k])


@dataclass(slots=True)
class PredictionCursor:
    """Where in a prediction the output has got to: moved on while the output follows it, found again after a
    detour by the output's latest tokens; `followed` counts the output tokens that were the predicted ones
    (OpenAI's accepted prediction tokens). The index is built at the first use, on the engine's step thread."""

    prediction: tuple[int, ...]
    index: NgramIndex | None = None
    cursor: int | None = 0
    seen: int = 0  # output tokens already followed
    followed: int = 0

    def _index(self) -> NgramIndex:
        if self.index is None:
            self.index = NgramIndex(self.prediction)
        return self.index

    def follow(self, output: Sequence[int]) -> None:
        """Move along the output's tokens not seen yet."""
        for token in output[self.seen:]:
            at = self.cursor
            if at is not None and at < len(self.prediction) and self.prediction[at] == token:
                self.cursor, self.followed = at + 1, self.followed + 1
            else:
                self.cursor = None
        self.seen = len(output)

    def draft(self, output: Sequence[int], k: int) -> tuple[int, ...]:
        """The next up to `k` predicted tokens for an output that is `output` so far."""
        self.follow(output)
        if self.cursor is None:
            self.cursor = self._index().after(output)
        return () if self.cursor is None else self.prediction[self.cursor:self.cursor + k]


@dataclass(slots=True)
class Drafter:
    """One sequence's speculation: where drafts come from, how likely its next draft token is to be kept (each
    token in turn, estimated from its recent steps), and what it has drafted. How many to propose is the
    caller's to weigh (`StepCost.best_length`); a sequence whose drafts do not pay rests `REST_STEPS` steps (longer
    after each probe that did not pay) and then tries one token."""

    params: Speculation
    context: NgramIndex | None = None
    predicted: PredictionCursor | None = None
    kept_weight: float = PRIOR_KEPT
    missed_weight: float = PRIOR_MISSED
    rest: int = 0
    backoff: int = 0  # probes in a row that did not pay
    last_source: DraftSource | None = None
    ahead: tuple[int, ...] = ()  # the draft model's guess for this step (the engine's, made before planning)
    drafted: dict[str, int] = field(default_factory=dict)  # by source
    accepted: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(cls, params: Speculation) -> Drafter:
        """A drafter for a sequence (its context index fills from the tokens `propose` is given)."""
        # Indexes are filled at the first proposal, on the step thread: a long prompt costs the event loop nothing.
        return cls(params=params, context=NgramIndex() if params.ngram else None,
                   predicted=PredictionCursor(params.prediction) if params.prediction else None)

    @property
    def alpha(self) -> float:
        """The estimated chance that a draft token is kept, given the ones before it were."""
        return self.kept_weight / (self.kept_weight + self.missed_weight)

    def propose(self, tokens: Sequence[int], num_prompt: int, room: int,
                length: Callable[[float, int], int] | None = None) -> tuple[int, ...]:
        """Draft tokens to follow `tokens` (prompt, then output), at most `room` (the caller's limit: budget,
        cells, max_tokens, context) and as many as `length(alpha, most)` says pay (`StepCost.best_length`;
        None: all of `room`)."""
        if self.context is not None:
            self.context.extend(tokens[len(self.context.tokens):])
        self.last_source = None
        if self.rest > 0:
            self.rest -= 1
            return ()
        most = min(self.params.max_draft, room)
        if most <= 0:
            return ()
        limit = most if length is None else length(self.alpha, most)
        if limit == 0:
            self.rest = REST_STEPS << min(self.backoff, MAX_BACKOFF)
            self.backoff += 1
            limit = 1  # a probe: the estimate only moves when something is drafted
        else:
            self.backoff = 0
        if self.predicted is not None:
            draft = self.predicted.draft(tokens[num_prompt:], limit)
            if draft:
                self.last_source = "prediction"
                return draft
        if self.context is not None:
            draft = self.context.continuation(tokens, limit, MIN_NGRAM_CONTEXT)
            if draft:
                self.last_source = "ngram"
                return draft
        if self.ahead:
            self.last_source = "draft"
            return self.ahead[:limit]
        return ()

    def wants_model(self) -> bool:
        """Whether the draft model should guess for this sequence before the next step: it drafts with the model
        and is not resting (a prediction it still follows is tried first, but may stop matching)."""
        return self.params.model and self.params.max_draft > 0 and self.rest == 0

    def unkeep(self, tokens: int) -> None:
        """`tokens` of the last draft's kept tokens were dropped after all (the choice stopped before them):
        computed and not in the output, so counted as refused."""
        if self.last_source is not None and tokens > 0:
            self.accepted[self.last_source] -= tokens

    def record(self, drafted: int, accepted: int) -> None:
        """What the last proposal came to: `accepted` of its `drafted` tokens were kept (each kept token a
        success, the first refused one a failure)."""
        if drafted == 0 or self.last_source is None:
            return
        source = self.last_source
        self.drafted[source] = self.drafted.get(source, 0) + drafted
        self.accepted[source] = self.accepted.get(source, 0) + accepted
        self.kept_weight = FORGET * self.kept_weight + accepted
        self.missed_weight = FORGET * self.missed_weight + (accepted < drafted)


@dataclass(slots=True)
class StepCost:
    """How long a step of so many rows takes, measured (a moving average per row count), and from it how many
    draft tokens a sequence should add to a step: as many as maximise what they are expected to save (each kept
    token saves its sequence a step's share, `step / sequences`) less what they add to the step's time. Drafting
    is nearly free on a GPU; on a few CPU cores a row costs nearly a token, and past some batch size llama.cpp's
    CPU kernels cost more per row still, which a measured table sees and a straight line would not."""

    smoothing: float = 0.2
    _seconds: dict[int, float] = field(default_factory=dict)
    _measured_at: dict[int, int] = field(default_factory=dict)  # the step each size was last measured at
    _steps: int = 0

    def observe(self, rows: int, seconds: float) -> None:
        """A step of `rows` rows took `seconds`."""
        previous = self._seconds.get(rows)
        self._seconds[rows] = seconds if previous is None else previous + self.smoothing * (seconds - previous)
        self._steps += 1
        self._measured_at[rows] = self._steps

    def measured(self, rows: int) -> bool:
        """Whether a step of `rows` rows was ever measured."""
        return rows in self._seconds

    def fresh(self, rows: int) -> bool:
        """Whether a step of `rows` rows was measured lately (or nothing is measured yet, so there is nothing to
        refresh): drafts are only weighed against a recent cost of the step without them."""
        if not self._seconds:
            return True
        return rows in self._measured_at and self._steps - self._measured_at[rows] < STALE_STEPS

    def time(self, rows: int) -> float | None:
        """A step of `rows` rows: measured, or interpolated between the nearest measured sizes, or beyond the
        largest along the slope of the two largest (a GPU's flat cost stays flat, so longer drafts get tried and
        measured; never cheaper than the largest), or at its cost per row with one size measured; None before
        anything is measured."""
        if not self._seconds:
            return None
        if rows in self._seconds:
            return self._seconds[rows]
        below = max((n for n in self._seconds if n < rows), default=None)
        above = min((n for n in self._seconds if n > rows), default=None)
        if below is None:
            assert above is not None
            return self._seconds[above] * rows / above
        if above is None:
            before = max((n for n in self._seconds if n < below), default=None)
            if before is None:
                return self._seconds[below] * rows / below
            slope = (self._seconds[below] - self._seconds[before]) / (below - before)
            return self._seconds[below] + (rows - below) * max(0.0, slope)
        share = (rows - below) / (above - below)
        return self._seconds[below] + share * (self._seconds[above] - self._seconds[below])

    def best_length(self, alpha: float, rows: int, sequences: int, most: int, extra: float = 0.0) -> int:
        """How many draft tokens (0 to `most`) to add to a step of `rows` rows decoding `sequences` sequences, for
        a sequence whose next draft token is kept with chance `alpha` (each later one given the earlier) and costs
        `extra` seconds to make (a draft model's row; prompt lookup's cost nothing)."""
        base = self.time(rows)
        if base is None:  # nothing measured yet: a short draft, to start measuring
            return min(most, PRIOR_DRAFT)
        value = base / max(1, sequences)  # a step's share, what a kept token saves its sequence
        best, best_gain, expected, chance = 0, 0.0, 0.0, 1.0
        for k in range(1, most + 1):
            chance *= alpha
            expected += chance * value
            added = self.time(rows + k)
            gain = expected - ((added if added is not None else base) - base) - k * extra
            if gain > best_gain:
                best, best_gain = k, gain
        return best


def verify(draft: Sequence[int], draw: Callable[[int], int]) -> list[int]:
    """The tokens a step gives a sequence that proposed `draft`: `draw(i)` samples position i (0: after its last
    token, i: after draft[i-1]) with its sampler chain; the draft is kept while the chain draws it, then the
    first token drawn otherwise, or the one after a fully kept draft. So 1 to len(draft) + 1 tokens."""
    out: list[int] = []
    for i in range(len(draft) + 1):
        token = draw(i)
        out.append(token)
        if i == len(draft) or token != draft[i]:
            break
    return out
