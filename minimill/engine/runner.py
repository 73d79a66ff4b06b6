"""Executes a StepPlan on llama.cpp: frees and copies KV, one llama_decode, then sampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minimill.engine.llama import LlamaContext, SamplerChain, TokenBatch
from minimill.engine.plan import PlanItem, SampledToken, StepPlan, StepResult
from minimill.engine.speculation import verify
from minimill.engine.types import TokenLogprob, TopLogprob

ABORTED = 2  # llama_decode's return code for an interrupted decode


class DecodeFailed(RuntimeError):
    """llama_decode returned an error; the KV state of the batch is unknown."""


class StepAborted(RuntimeError):
    """The decode was interrupted (`LlamaContext.abort`); llama.cpp removed the step's positions again."""


@dataclass(slots=True)
class ChoiceSampler:
    """A choice's native sampler chain and how many alternatives it wants logprobs for."""

    chain: SamplerChain
    top_logprobs: int | None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax of a [n_vocab] float array."""
    shifted = logits.astype(np.float64) - float(np.max(logits))
    return shifted - float(np.log(np.sum(np.exp(shifted))))


class Runner:
    """Does what the plan says. Owns the batch and the samplers, never reads scheduler state."""

    def __init__(self, ctx: LlamaContext) -> None:
        self.ctx = ctx
        self.batch = TokenBatch(ctx.n_batch)
        self.samplers: dict[int, ChoiceSampler] = {}
        self.swapped: dict[int, bytes] = {}  # KV of preempted sequences, by key, until swapped in

    def register(self, key: int, sampler: ChoiceSampler) -> None:
        """Attach the sampler of sequence `key`."""
        self.samplers[key] = sampler

    def unregister(self, key: int) -> None:
        """Free the sampler of sequence `key`, if any."""
        self.swapped.pop(key, None)
        sampler = self.samplers.pop(key, None)
        if sampler is not None:
            sampler.chain.close()

    def save(self, slot: int) -> bytes:
        """Serialise the KV of llama seq `slot` (for a colder tier); the KV stays where it is."""
        return self.ctx.save(slot)

    def execute(self, plan: StepPlan) -> StepResult:
        """Apply swaps, releases and copies, decode all items in one batch, sample where asked."""
        spilled = tuple((spill.key, self.ctx.save(spill.slot)) for spill in plan.spills)
        for swap in plan.swap_out:
            self.swapped[swap.key] = self.ctx.save(swap.slot)
        for slot in plan.releases:
            self.ctx.remove(slot)
        for swap in plan.swap_in:
            self.ctx.restore(swap.slot, self.swapped.pop(swap.key))
        for load in plan.loads:
            self.ctx.restore(load.slot, load.data)
            if load.keep is not None:
                self.ctx.remove(load.slot, load.keep)
        for slot, length in plan.cuts:
            self.ctx.remove(slot, length)
        for copy in plan.copies:
            self.ctx.copy_prefix(copy.src, copy.dst, copy.length)
        self.batch.clear()
        rows: list[tuple[PlanItem, int]] = []  # sampled items and the row of their first sampled position
        scoring: list[tuple[PlanItem, int]] = []  # items that score their targets, and their first row
        for item in plan.items:
            sampled_from = len(item.tokens) - 1 - item.drafted
            first = self.batch.size
            for offset, token in enumerate(item.tokens):
                self.batch.add(token, item.start + offset, item.slot,
                               bool(item.targets) or (item.sample and offset >= sampled_from))
            if item.sample:
                rows.append((item, first + sampled_from))
            if item.targets:
                scoring.append((item, first))
        if self.batch.size:
            code = self.ctx.decode(self.batch)
            if code == ABORTED:
                raise StepAborted(f"decode of {plan.num_tokens} tokens interrupted")
            if code != 0:
                raise DecodeFailed(f"llama_decode returned {code} for {plan.num_tokens} tokens")
        scored = tuple((item.key, self._score(item, first)) for item, first in scoring)
        sampled = [token for item, row in rows for token in self._verify(item, row)]
        return StepResult(sampled=tuple(sampled), scored=scored, spilled=spilled)

    def _verify(self, item: PlanItem, row: int) -> list[SampledToken]:
        """Sample an item's positions from `row` on: one token, or its draft's kept part and one more; the KV
        of the draft's rejected positions is removed."""
        if not item.drafted:
            return [self._sample(item.key, row)]
        draft = item.tokens[len(item.tokens) - item.drafted:]
        drawn: list[SampledToken] = []

        def draw(offset: int) -> int:
            drawn.append(self._sample(item.key, row + offset))
            return drawn[-1].token

        kept = len(verify(draft, draw)) - 1
        if kept < item.drafted:
            self.ctx.remove(item.slot, item.start + len(item.tokens) - item.drafted + kept)
        return drawn

    def cut(self, slot: int, length: int) -> None:
        """Drop llama seq `slot`'s KV from position `length` on (a sequence that stopped inside a kept draft)."""
        self.ctx.remove(slot, length)

    def _score(self, item: PlanItem, first: int) -> tuple[TokenLogprob, ...]:
        """Log-probability of each target token at its position (with the top alternatives it asked for)."""
        top = self.samplers[item.key].top_logprobs if item.key in self.samplers else None
        return tuple(self._describe(log_softmax(self.ctx.logits(first + offset)), target, top or 0)
                     for offset, target in enumerate(item.targets) if target >= 0)

    def _sample(self, key: int, row: int) -> SampledToken:
        sampler = self.samplers[key]
        if sampler.top_logprobs is None:
            return SampledToken(key=key, token=sampler.chain.sample(self.ctx, row))
        logprobs = log_softmax(self.ctx.logits(row))
        token = sampler.chain.sample(self.ctx, row)
        return SampledToken(key=key, token=token, logprob=self._describe(logprobs, token, sampler.top_logprobs))

    def _describe(self, logprobs: np.ndarray, token: int, top: int) -> TokenLogprob:
        model = self.ctx.model
        alternatives: tuple[TopLogprob, ...] = ()
        if top > 0:
            best = np.argpartition(-logprobs, top)[:top]
            best = best[np.argsort(-logprobs[best], kind="stable")]
            alternatives = tuple(
                TopLogprob(token_id=int(t), text=model.detokenize([int(t)]), logprob=float(logprobs[t]))
                for t in best)
        return TokenLogprob(token_id=token, text=model.detokenize([token]), logprob=float(logprobs[token]),
                            top=alternatives)

    def close(self) -> None:
        """Free samplers and the batch."""
        for key in list(self.samplers):
            self.unregister(key)
        self.batch.close()
