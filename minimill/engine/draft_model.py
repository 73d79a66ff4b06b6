"""A draft model: a smaller model with the target's vocabulary that guesses each decoding sequence's next tokens
greedily, in its own llama.cpp context, batched across sequences.

Its KV is kept in step with the target's by content, not by replaying what happened to the target: before each
draft a sequence's draft KV is cut back to what it shares with the sequence's tokens now (a refused draft, a stop,
a preemption, a prefix copied or loaded from a tier on the target's side), and what is missing is computed,
copied first from the draft sequence sharing the longest prefix with it (a prompt that reuses a cached prefix on
the target reuses it here too). So whatever moved the target's KV, the draft reads the same tokens.

Greedy drafts are proposals with certainty: `speculation.verify` keeps what the target's own sampler chain
draws, so the output is unchanged, token for token with greedy sampling and in distribution otherwise.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from minimill.engine.llama import ContextShape, LlamaContext, LlamaModel, TokenBatch
from minimill.kv.radix import common_length

NO_ROOM = 1  # llama_decode: no KV slot for the batch
# How fast the measured cost of a draft row forgets older steps.
SMOOTHING = 0.2


@dataclass(frozen=True, slots=True)
class DraftAsk:
    """Draft up to `length` tokens to follow `tokens` (a decoding sequence's prompt and output) for sequence
    `key`."""

    key: int
    tokens: list[int]
    length: int


@dataclass(slots=True)
class _DraftSeq:
    slot: int
    tokens: list[int] = field(default_factory=list)  # what this slot's KV holds, position by position
    finished: bool = False  # its target sequence is gone: kept only as a prefix to copy from


class DraftModel:
    """Drafts for many sequences at once: one catch-up decode (every sequence's tokens its draft KV lacks), then
    one decode per further draft token. Owned by the engine's step thread."""

    def __init__(self, model: LlamaModel, shape: ContextShape) -> None:
        if model.is_recurrent:
            raise ValueError("a recurrent or hybrid model cannot draft: its memory cannot drop refused tokens")
        self.model = model
        self.ctx = LlamaContext(model, shape)
        self.batch = TokenBatch(self.ctx.n_batch)
        self._seqs: OrderedDict[int, _DraftSeq] = OrderedDict()  # by target key, least recently drafted first
        self._free = list(range(shape.n_seq_max - 1, -1, -1))
        self.row_seconds: float | None = None  # what one draft token costs to make, measured

    def draft(self, asks: Sequence[DraftAsk]) -> dict[int, tuple[int, ...]]:
        """Each ask's greedy draft (shorter or missing where the draft context had no room)."""
        asks = [ask for ask in asks if ask.length > 0 and ask.tokens]
        started = time.monotonic()
        fresh = any(ask.key not in self._seqs for ask in asks)  # a new sequence's catch-up is its prompt
        for ask in asks:
            self._sync(ask.key, ask.tokens, keep=[a.key for a in asks])
        asks = [ask for ask in asks if ask.key in self._seqs]
        drafts: dict[int, list[int]] = {ask.key: [] for ask in asks}
        # Catch up: every token a sequence's draft KV lacks, logits at each one's last.
        rows = [(ask.key, ask.tokens[pos], pos, pos == len(ask.tokens) - 1)
                for ask in asks for pos in range(len(self._seqs[ask.key].tokens), len(ask.tokens))]
        for key, token in self._decode(rows).items():
            drafts[key].append(token)
        caught_up, extended = time.monotonic(), 0
        for _ in range(max((ask.length for ask in asks), default=0) - 1):
            rows = [(ask.key, drafts[ask.key][-1], len(self._seqs[ask.key].tokens), True) for ask in asks
                    if ask.key in self._seqs and 0 < len(drafts[ask.key]) < ask.length]
            if not rows:
                break
            for key, token in self._decode(rows).items():
                drafts[key].append(token)
            extended += len(rows)
        # What a draft token costs to make, catching up included (after a rest, a probe catches up on every token
        # decoded meanwhile): what drafting must save to pay. A new sequence's prompt is a one-off, left out.
        drafted = sum(len(tokens) for tokens in drafts.values())
        seconds, made = (time.monotonic() - caught_up, extended) if fresh else (time.monotonic() - started, drafted)
        if made:
            per_row = seconds / made
            self.row_seconds = per_row if self.row_seconds is None else (
                self.row_seconds + SMOOTHING * (per_row - self.row_seconds))
        return {key: tuple(tokens) for key, tokens in drafts.items() if tokens}

    def release(self, key: int) -> None:
        """Sequence `key` is gone: its draft KV stays as a prefix others may copy, first to go when room is
        needed."""
        seq = self._seqs.get(key)
        if seq is not None:
            seq.finished = True
            self._seqs.move_to_end(key, last=False)

    def clear(self) -> None:
        """Forget every sequence (the target's KV was reset)."""
        self.ctx.clear()
        for seq in self._seqs.values():
            self._free.append(seq.slot)
        self._seqs.clear()

    def close(self) -> None:
        """Free the native context and batch."""
        self.batch.close()
        self.ctx.close()

    # ---- inside ------------------------------------------------------------------------------------------------
    def _sync(self, key: int, tokens: list[int], keep: list[int]) -> None:
        """Make sequence `key`'s draft KV a prefix of `tokens` without its last token (which the catch-up decodes,
        for its logits): cut what differs, copy the longest prefix another draft sequence holds."""
        seq = self._seqs.get(key)
        limit = len(tokens) - 1
        if seq is None:
            slot = self._take_slot(protect=keep)
            if slot is None:
                return
            seq = self._seqs[key] = _DraftSeq(slot=slot)
            donor = max((s for k, s in self._seqs.items() if k != key), default=None,
                        key=lambda s: common_length(s.tokens, tokens))
            if donor is not None and (length := min(common_length(donor.tokens, tokens), limit)) > 0:
                self.ctx.copy_prefix(donor.slot, slot, length)
                seq.tokens = list(tokens[:length])
        self._seqs.move_to_end(key)
        length = min(common_length(seq.tokens, tokens), limit)
        if length < len(seq.tokens):
            self.ctx.remove(seq.slot, length)
            del seq.tokens[length:]

    def _take_slot(self, protect: list[int]) -> int | None:
        if not self._free:
            self._drop_one(protect)
        return self._free.pop() if self._free else None

    def _drop_one(self, protect: list[int]) -> bool:
        """Drop the least recently used draft sequence not in `protect` (finished ones first)."""
        for finished_pass in (True, False):
            for key, seq in self._seqs.items():
                if seq.finished == finished_pass and key not in protect:
                    self._forget(key)
                    return True
        return False

    def _forget(self, key: int) -> None:
        seq = self._seqs.pop(key)
        self.ctx.remove(seq.slot)
        self._free.append(seq.slot)

    def _decode(self, rows: list[tuple[int, int, int, bool]]) -> dict[int, int]:
        """Decode rows (key, token, position, wants logits) in batch-sized chunks; each key's greedy next token
        after its last row that wants logits. A sequence a decode fails for is forgotten (drafts are optional)."""
        picked: dict[int, int] = {}
        capacity = self.batch.capacity
        for begin in range(0, len(rows), capacity):
            chunk = [row for row in rows[begin:begin + capacity] if row[0] in self._seqs]
            if not chunk:
                continue
            self.batch.clear()
            for key, token, pos, logits in chunk:
                self.batch.add(token, pos, self._seqs[key].slot, logits)
            code = self.ctx.decode(self.batch)
            if code == NO_ROOM and self._drop_one(protect=[row[0] for row in chunk]):
                code = self.ctx.decode(self.batch)
            if code != 0:
                for key in {row[0] for row in chunk}:
                    self._forget(key)
                    picked.pop(key, None)
                continue
            for index, (key, token, _pos, logits) in enumerate(chunk):
                self._seqs[key].tokens.append(token)
                if logits:
                    picked[key] = int(np.argmax(self.ctx.logits(index)))
        return picked
