"""Async facade over one model: `generate(request)` streams deltas; one step-loop thread decodes.

The loop thread owns the scheduler, runner and llama context. Callers talk to it through a
thread-safe inbox; results come back on each request's asyncio queue.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from minimill.config import EngineConfig
from minimill.engine.admission import Admission, AdmissionLimits
from minimill.engine.draft_model import DraftAsk, DraftModel
from minimill.engine.llama import (
    ContextShape,
    LlamaContext,
    LlamaModel,
)
from minimill.engine.output import TextStream, next_text
from minimill.engine.plan import SampledToken, StepPlan
from minimill.engine.runner import ChoiceSampler, Runner, StepAborted
from minimill.engine.scheduler import Scheduler, SchedulerLimits
from minimill.engine.sequence import Pin, Preload, SeqStatus
from minimill.engine.sequence import Sequence as Seq
from minimill.engine.speculation import BEST_ALPHA, Drafter, Speculation
from minimill.engine.stats import StepRecorder, online_backlog
from minimill.engine.text import TextOps, chat_template_of
from minimill.engine.types import (
    ChoiceDelta,
    EngineStats,
    GenerationRequest,
    KVTier,
    NamedKV,
    Priority,
    SamplingParams,
    TokenLogprob,
    Usage,
)
from minimill.errors import CapacityExceeded, ContextOverflow, EngineUnavailable, InvalidRequest
from minimill.kv.prefix_disk import PrefixDisk
from minimill.kv.tiers import StoredKV, TierStore
from minimill.metrics import Metrics

log = logging.getLogger(__name__)
IDLE_CHECK_SECONDS = 1.0
MAX_CONSECUTIVE_FAILURES = 5
MAX_LLAMA_SEQS = 256  # llama.cpp's LLAMA_MAX_SEQ: sequence ids one context can have


@dataclass(slots=True, eq=False)
class _Choice:
    index: int
    seq: Seq
    text: TextStream
    done: bool = False
    scores: list[TokenLogprob] = field(default_factory=list)  # prompt logprobs, until the first delta carries them


@dataclass(slots=True, eq=False)
class _Request:
    """A submitted request as the loop thread sees it."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    outbox: asyncio.Queue[ChoiceDelta | Usage | Exception]
    choices: list[_Choice]
    submitted: float = field(default_factory=time.monotonic)
    first_token: bool = False
    finished: bool = False
    kv_tier: KVTier | None = None
    kept_tokens: int = 0
    gate: threading.Lock = field(default_factory=threading.Lock)  # `stored` and `held`, across two threads
    stored: bool = True
    held: Usage | None = None
    to_compute: int = 1  # prompt tokens it is expected to prefill (admission's estimate, counted in and out)

    def send(self, item: ChoiceDelta | Usage | Exception) -> None:
        if not self.loop.is_closed():  # an internal request (a cache rebuild) may outlive its caller's loop
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, item)

    def hold_until_stored(self) -> Callable[[], None]:
        """Make the closing Usage wait until a durable entry's file is on disk (a cache is answered only once
        it would survive a crash); returns what the tier store calls then, from its writer thread."""
        self.stored = False

        def stored() -> None:
            with self.gate:
                self.stored = True
                held, self.held = self.held, None
            if held is not None:
                self.send(held)

        return stored

    def send_usage(self, usage: Usage) -> None:
        """Send the closing Usage, now or once the durable entry is stored."""
        with self.gate:
            if not self.stored:
                self.held = usage
                return
        self.send(usage)


def _prediction_use(seq: Seq) -> tuple[int, int]:
    """A finished choice's Predicted Outputs counts: output tokens that were the predicted ones, and predicted
    tokens drafted but refused (computed and billed, not in the output)."""
    drafter = seq.drafter
    if drafter is None or drafter.predicted is None:
        return 0, 0
    drafter.predicted.follow(seq.tokens[seq.num_prompt:])
    return drafter.predicted.followed, drafter.drafted.get("prediction", 0) - drafter.accepted.get("prediction", 0)


class Engine(TextOps):
    """One model served: tokenization, chat templates, and generation with continuous batching."""

    def __init__(self, name: str, model: LlamaModel, config: EngineConfig, metrics: Metrics,
                 tiers: TierStore | None = None, prefixes: PrefixDisk | None = None,
                 draft: LlamaModel | None = None) -> None:
        self.name = name
        # Without a store, pinned KV lives in RAM only (tests, benchmarks); `serve` passes one with a disk tier,
        # and `prefixes`, the disk below RAM for finished prefixes.
        self.tiers = tiers or TierStore(fingerprint=f"{model.path}:{config.kv_type}", directory=None)
        self.prefixes = prefixes
        self.model = model
        self.config = config
        self.created = int(time.time())
        threads = config.threads or max(1, os.cpu_count() or 1)
        holders = max(0, min(config.max_seqs, MAX_LLAMA_SEQS - config.max_seqs))
        shape = ContextShape(n_ctx=config.kv_size, n_seq_max=config.max_seqs + holders,
                             n_batch=config.step_tokens + config.max_seqs, threads=threads,
                             kv_type=config.kv_type)
        self.ctx = LlamaContext(model, shape)
        self.n_ctx = min(self.ctx.n_ctx, model.n_ctx_train)
        self.longest_piece = model.longest_piece()  # bounds a prompt's tokens from its characters
        # A step's rows fit one decode: llama.cpp caps a batch at the context's cells (a small --kv-size).
        self.scheduler = Scheduler(SchedulerLimits(kv_cells=self.ctx.n_ctx, max_seqs=config.max_seqs,
                                                   step_tokens=min(config.step_tokens, self.ctx.n_batch),
                                                   retain_cells=config.retain_cells,
                                                   retain_ram_bytes=config.ram_tier_bytes if config.retain_ram else 0,
                                                   batch_step_tokens=config.batch_step_tokens,
                                                   batch_idle_step_tokens=config.batch_idle_step_tokens,
                                                   batch_max_seqs=config.batch_max_seqs, holder_slots=holders),
                                   below_ram=prefixes.add if prefixes is not None else None)
        self.runner = Runner(self.ctx)
        # The draft model's KV holds what the running sequences hold (and finished ones as prefixes to copy), in
        # f16: its drafts are only verified, so they need not be batch-invariant, and f16 is the faster type here.
        self.drafts = None if draft is None else DraftModel(draft, ContextShape(
            n_ctx=config.kv_size, n_seq_max=min(MAX_LLAMA_SEQS, 2 * config.max_seqs),
            n_batch=config.step_tokens + config.max_seqs, threads=threads, kv_type="f16"))
        self.admission = Admission(AdmissionLimits(max_delay=config.max_queue_delay, max_waiting=config.max_queue,
                                                   slots=config.max_seqs))
        self.template = chat_template_of(model)
        self._metrics = metrics
        self._keys = itertools.count(1)
        self._inbox: queue.SimpleQueue[tuple[str, _Request]] = queue.SimpleQueue()
        self._controls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._live: dict[int, _Request] = {}  # seq key -> request, loop thread only
        self._interruptible = False  # the decode in progress holds batch work only
        self._waiting = 0
        self._healthy = True
        self._failures = 0  # consecutive failed loop iterations
        self._restarts = 0  # times the loop reset the KV and failed what was live
        self._recorder = StepRecorder(name, metrics, self.ctx.n_ctx)
        self._drafted: Counter[str] = Counter()  # draft tokens verified, by source
        self._kept: Counter[str] = Counter()  # ... and kept
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
        self._thread.start()

    @property
    def batch_slots(self) -> int:
        """How many Batch API sequences this engine runs at once (the rest is kept for online requests)."""
        return self.scheduler.limits.batch_seqs

    def stats(self) -> EngineStats:
        """Current load; safe to read from any thread (values may be one step old)."""
        s = self.scheduler
        return EngineStats(waiting=self._waiting, running=len(s.running), retained=len(s.retained),
                           kv_used=s.cells.used, kv_total=self.ctx.n_ctx,
                           healthy=self._healthy and self._thread.is_alive(), restarts=self._restarts)

    # ---- named KV (prompt caches and sessions) ------------------------------------------------
    def forget(self, name: str) -> None:
        """Drop a named entry from every tier, the live KV included (a deleted or expired cache)."""
        self.tiers.drop(name)
        self._control(lambda: self.scheduler.unpin(name, evict=True))

    def extend(self, name: str, expires_at: float) -> None:
        """Keep a named entry until `expires_at` in every tier it is in."""
        self.tiers.extend(name, expires_at)

        def repin() -> None:
            slot = self.scheduler.pins.get(name)
            if slot is not None:
                self.scheduler.retained[slot].pin = Pin(name, expires_at)
        self._control(repin)

    def tier_of(self, name: str) -> KVTier | None:
        """The warmest tier holding a named entry (read from any thread; may be a step old)."""
        if name in self.scheduler.pins:
            return "live"
        return self.tiers.tier_of(name)

    def _control(self, action: Callable[[], None]) -> None:
        self._controls.put(action)
        self._wake.set()

    # ---- generation --------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[ChoiceDelta | Usage]:
        """Stream deltas of all choices, then one Usage. Raises before the first item on bad input.

        Closing the iterator early (client gone) aborts the request and frees its KV.
        """
        self._validate(request)
        if request.reuse is not None and request.reuse.name not in self.scheduler.pins:
            # Before anything is held for the request: a cancellation here leaves nothing to undo.
            await asyncio.to_thread(self.tiers.warm, request.reuse.name)  # a disk read, not on the step thread
        elif self.prefixes is not None and request.params.prompt_logprobs is None:
            await self._recall(request)
        state = self._make_request(request, asyncio.get_running_loop())
        named = len(request.reuse.tokens) if request.reuse is not None else 0
        state.to_compute = self.admission.to_compute(request.tenant, request.prompt_tokens, reused=named)
        for choice in state.choices:
            choice.seq.expected_reuse = len(request.prompt_tokens) - state.to_compute
        if request.priority == "online":  # batch work waits by design: it is never refused for load
            try:
                self.admission.admit(request.tenant, state.to_compute, request.params.max_tokens)
            except CapacityExceeded:
                for choice in state.choices:
                    self.runner.unregister(choice.seq.key)
                raise
        self.admission.remember(request.tenant, request.prompt_tokens)
        self._submit("add", state)
        try:
            while True:
                item = await state.outbox.get()
                if isinstance(item, Exception):
                    raise item
                yield item
                if isinstance(item, Usage):
                    return
        finally:
            if not state.finished:
                self._submit("abort", state)

    async def _recall(self, request: GenerationRequest) -> None:
        """A finished prefix of the tenant's that fell out of RAM to disk and that this prompt resends: read it
        back (off the step thread) and hand it to RAM, where the scheduler finds it as any saved prefix. Done
        before anything is held for the request; cancelled meanwhile, the prefix is only lost (a cache)."""
        assert self.prefixes is not None
        name = self.prefixes.find([request.tenant], request.prompt_tokens)
        if name is None:
            return
        recalled = await asyncio.to_thread(self.prefixes.take, name)
        if recalled is not None:
            # Runs on the step thread before the request it is for: controls go first in every loop turn.
            self._control(lambda: self.scheduler.ram.adopt(recalled.namespace, recalled.tokens, recalled.data))

    def _validate(self, request: GenerationRequest) -> None:
        prompt, params = request.prompt_tokens, request.params
        if not prompt:
            raise InvalidRequest("the prompt is empty", param="prompt")
        if any(not 0 <= t < self.model.n_vocab for t in prompt):
            raise InvalidRequest(f"token ids must be in [0, {self.model.n_vocab})", param="prompt")
        if len(prompt) + params.max_tokens > self.n_ctx:
            raise ContextOverflow(
                f"This model's maximum context length is {self.n_ctx} tokens. However, you requested "
                f"{len(prompt) + params.max_tokens} tokens ({len(prompt)} in the prompt, "
                f"{params.max_tokens} for the completion). Please reduce the prompt or max_tokens.",
                param="max_tokens" if len(prompt) < self.n_ctx else "messages", code="context_length_exceeded")

    def _make_request(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> _Request:
        params = request.params
        choices: list[_Choice] = []
        try:
            for index in range(request.n):
                seed = None if params.seed is None else params.seed + index
                chain = self.model.make_sampler(params, seed)
                key = next(self._keys)
                seq = Seq(key=key, tenant=request.tenant, tokens=list(request.prompt_tokens),
                          num_prompt=len(request.prompt_tokens), max_tokens=params.max_tokens,
                          batch=request.priority == "batch",
                          score_prompt=params.prompt_logprobs is not None and index == 0)
                if request.keep is not None and index == 0:
                    seq.pin = Pin(request.keep.name, request.keep.expires_at)
                if request.reuse is not None and request.reuse.namespace != request.tenant:
                    seq.shared_namespace = request.reuse.namespace
                speculation = self._speculation(params)
                if speculation.enabled and not seq.score_prompt:
                    seq.drafter = Drafter.start(speculation)
                self.runner.register(key, ChoiceSampler(chain, params.logprobs))
                choices.append(_Choice(index=index, seq=seq, text=TextStream(params.stop)))
        except InvalidRequest:
            for choice in choices:
                self.runner.unregister(choice.seq.key)
            raise
        return _Request(request=request, loop=loop, outbox=asyncio.Queue(),
                        choices=choices)

    def _speculation(self, params: SamplingParams) -> Speculation:
        """A request's drafting, its own choices over the server's defaults; none on a recurrent or hybrid model,
        whose memory cannot drop a refused draft's positions."""
        spec, config = params.spec, self.config
        if spec.method == "draft" and self.drafts is None:
            raise InvalidRequest("speculation 'draft' needs a draft model, and this server was started without one "
                                 "(minimill serve --draft-model NAME)", param="speculation")
        method = spec.method or config.speculation
        if self.model.is_recurrent:
            return Speculation(ngram=False, max_draft=0)
        # The server's default "draft" on a model the draft model cannot draft for (another vocabulary): none.
        return Speculation(ngram=method == "ngram", model=method == "draft",
                           max_draft=config.spec_max_draft if spec.max_draft is None else spec.max_draft,
                           prediction=spec.prediction)

    def _submit(self, kind: str, state: _Request) -> None:
        if self._stop.is_set():
            if kind == "add":
                raise EngineUnavailable("the engine is shutting down")
            return  # nothing runs any more: there is nothing to abort
        self._inbox.put((kind, state))
        self._wake.set()
        if kind == "add" and state.request.priority == "online" and self._interruptible:
            self.ctx.abort()

    # ---- the step loop (engine thread) ---------------------------------------------------------
    def _run(self) -> None:
        last_check = time.monotonic()
        while not self._stop.is_set():
            try:
                self._drain_inbox()
                if not self.scheduler.has_work:
                    if time.monotonic() - last_check > IDLE_CHECK_SECONDS:
                        self.scheduler.check()
                        last_check = time.monotonic()
                    self._wake.wait(IDLE_CHECK_SECONDS)
                    self._wake.clear()
                    continue
                self._step()
                self._failures = 0
            except Exception as exc:  # anything failing in the loop fails what is live, never leaves it hanging
                log.exception("engine loop failed; resetting the KV cache")
                self._failures += 1
                self._restarts += 1
                self._metrics.engine_restarts.labels(self.name).inc()
                self._fail_all(exc)
                if self._failures >= MAX_CONSECUTIVE_FAILURES:  # broken for good: say so on /health
                    self._healthy = False
                    time.sleep(IDLE_CHECK_SECONDS)

    def _drain_inbox(self) -> None:
        while not self._controls.empty():
            self._controls.get_nowait()()
        while True:
            try:
                kind, state = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                if state.request.priority == "online":
                    self.admission.entered(state.request.tenant, state.to_compute)
                self._find_reused(state)
                for choice in state.choices:
                    self._live[choice.seq.key] = state
                    self.scheduler.add(choice.seq)
            elif not state.finished:
                self._bill_aborted(state)
                self._finish_request(state, outcome="aborted", abort=True)
            self._waiting = len(self.scheduler.waiting)

    def _find_reused(self, state: _Request) -> None:
        """Where the named entry a request reuses is: live, or loaded from RAM or disk for its first choice."""
        ref = state.request.reuse
        if ref is None:
            return
        if ref.name in self.scheduler.pins:
            state.kv_tier = "live"
            self._recorder.live_hits += 1
            return
        lapsed = self.tiers.take_lapsed(ref.name)
        if lapsed is not None:  # past its TTL its KV is an ordinary prefix, found (or not) as any other
            self.scheduler.ram.adopt(ref.namespace, lapsed.tokens, lapsed.data)
        found = self.tiers.get(ref.name)
        if found is not None:
            entry, state.kv_tier = found
            state.choices[0].seq.preload = Preload(pin=Pin(ref.name, entry.expires_at), namespace=ref.namespace,
                                                   tokens=entry.tokens, data=entry.data)
        elif ref.tokens:
            self._rebuild(ref, state.loop, state.request.priority)

    def _rebuild(self, ref: NamedKV, loop: asyncio.AbstractEventLoop, priority: Priority) -> None:
        """A cache whose KV is in no tier (lost, or its file was bad): prefill its prefix again, ahead
        of the request that named it (which waits for it and copies), and pin and store it anew."""
        request = GenerationRequest(request_id=f"rebuild-{ref.name}", prompt_tokens=ref.tokens,
                                    params=SamplingParams(max_tokens=1, temperature=0.0), tenant=ref.namespace,
                                    keep=ref, priority=priority)
        state = self._make_request(request, loop)  # nobody reads its outbox: only its KV matters
        for choice in state.choices:
            self._live[choice.seq.key] = state
            self.scheduler.add(choice.seq)

    def _step(self) -> None:
        if self.config.retain_ram:  # finished prefixes saved in RAM get what pinned KV leaves of the budget
            self.scheduler.ram.resize(self.config.ram_tier_bytes - self.tiers.bytes_in("ram"))
        drafting = self._draft_ahead() if self.drafts is not None else []
        plan = self.scheduler.schedule()
        for seq in drafting:  # a guess not planned this step is stale by the next
            assert seq.drafter is not None
            seq.drafter.ahead = ()
        # A step of batch work only may be cut short by an online request (`_submit`): it then waits for
        # nothing but its own step. The batch tokens are planned again.
        self._interruptible = bool(plan.items) and all(self._live[i.key].request.priority == "batch"
                                                       for i in plan.items if i.key in self._live)
        started = time.monotonic()
        try:
            result = self.runner.execute(plan)
        except StepAborted:
            self.scheduler.rollback(plan)
            self._metrics.aborted_steps.labels(self.name).inc()
            return
        finally:
            self._interruptible = False
        seconds = time.monotonic() - started
        sampling = sum(item.sample for item in plan.items)
        self.admission.observe_step(plan.num_tokens, seconds, full=plan.num_tokens >= self.config.step_tokens // 2,
                                    sequences=sampling)
        if plan.items and sampling == len(plan.items):  # decodes (and drafts) only: what drafting weighs against
            self.scheduler.step_cost.observe(plan.num_tokens, seconds)
        advanced = self.scheduler.update(plan, result)
        for key, scores in result.scored:
            if (state := self._live.get(key)) is not None:
                next(c for c in state.choices if c.seq.key == key).scores.extend(scores)
        by_key: dict[int, list[SampledToken]] = {}
        for token in result.sampled:
            by_key.setdefault(token.key, []).append(token)
        self._count_drafts(plan, by_key)
        for seq in advanced:
            self._on_tokens(seq, by_key[seq.key])
        self._record(plan.num_tokens, len(result.sampled))

    def _draft_ahead(self) -> list[Seq]:
        """The draft model's guesses for the sequences that decode next, as long as pays (`StepCost.best_length`
        with what a draft token costs to make) or one token (a probe: the scheduler rests a sequence whose drafts
        do not pay). Returns the sequences it drafted for."""
        assert self.drafts is not None
        scheduler, cost = self.scheduler, self.scheduler.step_cost
        decoding = [s for s in scheduler.running if not s.in_prefill]
        extra = self.drafts.row_seconds or 0.0
        scheduler.draft_row_seconds = extra
        rows = len(decoding)
        if not cost.fresh(rows):  # the scheduler drafts nothing this step: it measures the step without drafts
            return []
        asks: dict[int, tuple[Seq, DraftAsk]] = {}
        for seq in decoding:
            if seq.drafter is None or not seq.drafter.wants_model():
                continue
            room = min(seq.drafter.params.max_draft, seq.max_tokens - seq.num_generated - 1,
                       self.n_ctx - len(seq.tokens) - 1)
            # Where even a perfect draft would not pay here, the draft model is not asked (nor catches up); a step
            # one row longer that was never measured is tried first (its cost is only guessed until then).
            pays = not cost.measured(rows + 1) or cost.best_length(BEST_ALPHA, rows, rows, room, extra) > 0
            if room > 0 and pays:
                length = cost.best_length(seq.drafter.alpha, rows, rows, room, extra)
                asks[seq.key] = (seq, DraftAsk(key=seq.key, tokens=seq.tokens, length=max(1, length)))
        guesses = self.drafts.draft([ask for _, ask in asks.values()])
        for key, draft in guesses.items():
            drafter = asks[key][0].drafter
            assert drafter is not None
            drafter.ahead = draft
        return [seq for seq, _ in asks.values()]

    def _count_drafts(self, plan: StepPlan, sampled: dict[int, list[SampledToken]]) -> None:
        """Metrics of the step's drafts, by where they came from."""
        for item in plan.items:
            state = self._live.get(item.key) if item.drafted else None
            seq = next(c.seq for c in state.choices if c.seq.key == item.key) if state is not None else None
            source = seq.drafter.last_source if seq is not None and seq.drafter is not None else None
            if source is None:
                continue
            kept = len(sampled.get(item.key, ())) - 1
            self._drafted[source] += item.drafted
            self._kept[source] += kept
            self._metrics.spec_drafted.labels(self.name, source).inc(item.drafted)
            self._metrics.spec_accepted.labels(self.name, source).inc(kept)
            self._metrics.spec_acceptance.labels(self.name, source).set(self._kept[source] / self._drafted[source])

    def _on_tokens(self, seq: Seq, tokens: list[SampledToken]) -> None:
        """A step's new tokens for one choice (several when it kept a draft), sent one at a time; a choice that
        stops before the last keeps none after it (nor their KV)."""
        state = self._live[seq.key]
        choice = next(c for c in state.choices if c.seq is seq)
        if not state.first_token:
            state.first_token = True
            self._metrics.ttft.labels(self.name).observe(time.monotonic() - state.submitted)
        before = len(seq.tokens) - len(tokens)
        for n, sampled in enumerate(tokens):
            if not self._send_token(state, choice, sampled, length=before + n + 1):
                continue
            if n + 1 < len(tokens):
                assert seq.slot is not None
                self.scheduler.trim(seq, before + n + 1)
                self.runner.cut(seq.slot, seq.num_computed)
                if seq.drafter is not None:  # kept draft tokens after the stop: computed, not in the output
                    seq.drafter.unkeep(len(tokens) - n - 2)
            self._finish_choice(state, choice)
            return

    def _send_token(self, state: _Request, choice: _Choice, sampled: SampledToken, length: int) -> bool:
        """Send the delta of a choice's token, the `length`th of its sequence; True when it ends the choice."""
        seq = choice.seq
        scores, choice.scores = tuple(choice.scores), []
        if seq.max_tokens == 0:  # scoring only: the prompt's logits were the point, the token is not kept
            seq.tokens.pop()
            state.send(ChoiceDelta(index=choice.index, text="", prompt_logprobs=scores, finish_reason="length"))
            return True
        token = sampled.token
        text, finish = next_text(choice.text, token, state.request.params, end_of_generation=self.model.is_eog(token),
                                 piece=self.model.piece,
                                 out_of_room=length - seq.num_prompt >= seq.max_tokens or length >= self.n_ctx)
        logprobs: tuple[TokenLogprob, ...] = (sampled.logprob,) if sampled.logprob is not None else ()
        state.send(ChoiceDelta(index=choice.index, text=text, token_ids=(token,), logprobs=logprobs,
                               finish_reason=finish, prompt_logprobs=scores))
        return finish is not None

    def _finish_choice(self, state: _Request, choice: _Choice) -> None:
        choice.done = True
        keep = state.request.keep
        if choice.seq.pin is not None and keep is not None:
            if keep.ttl is not None:
                choice.seq.pin = Pin(keep.name, time.time() + keep.ttl)
                state.kept_tokens = choice.seq.num_computed
            self._save_pinned(choice.seq, keep.durable, state.hold_until_stored() if keep.durable else None)
        self.scheduler.finish(choice.seq)
        self._release_choice(choice)
        if all(c.done for c in state.choices):
            state.finished = True
            cached = state.choices[0].seq.cached_tokens
            self._metrics.requests.labels(self.name, "completed").inc()  # counted before the caller can look
            predicted = [_prediction_use(c.seq) for c in state.choices]
            state.send_usage(Usage(prompt_tokens=len(state.request.prompt_tokens),
                                   completion_tokens=sum(c.seq.num_generated for c in state.choices),
                                   cached_tokens=cached, kv_tier=state.kv_tier if cached else None,
                                   kept_tokens=state.kept_tokens,
                                   kept_seconds=keep.ttl if keep is not None and keep.ttl is not None else 0.0,
                                   accepted_prediction_tokens=sum(followed for followed, _ in predicted),
                                   rejected_prediction_tokens=sum(refused for _, refused in predicted)))

    def _save_pinned(self, seq: Seq, durable: bool, landed: Callable[[], None] | None = None) -> None:
        """Write a pinned sequence's KV to the RAM tier (and disk if durable) before it is retained,
        so evicting it later from the live KV loses nothing; `landed` once it is on disk."""
        assert seq.pin is not None and seq.slot is not None
        if seq.num_computed == 0:
            if landed is not None:
                landed()
            return
        data = self.runner.save(seq.slot)
        self._recorder.kv_bytes_per_cell = len(data) / seq.num_computed
        self.tiers.put(seq.pin.name, StoredKV(tokens=tuple(seq.tokens[: seq.num_computed]), data=data,
                                              expires_at=seq.pin.expires_at, durable=durable), landed)

    def _release_choice(self, choice: _Choice) -> None:
        self._live.pop(choice.seq.key, None)
        self.runner.unregister(choice.seq.key)
        if self.drafts is not None:
            self.drafts.release(choice.seq.key)

    def _bill_aborted(self, state: _Request) -> None:
        """Hand what an aborted request computed so far to its `on_abort` (nothing, if nothing was)."""
        callback = state.request.on_abort
        computed = max(min(c.seq.num_computed, c.seq.num_prompt) for c in state.choices)
        generated = sum(c.seq.num_generated for c in state.choices)
        if callback is None or (computed == 0 and generated == 0) or state.loop.is_closed():
            return
        usage = Usage(prompt_tokens=computed, completion_tokens=generated,
                      cached_tokens=min(state.choices[0].seq.cached_tokens, computed),
                      rejected_prediction_tokens=sum(_prediction_use(c.seq)[1] for c in state.choices))
        state.loop.call_soon_threadsafe(callback, state.request.request_id, usage)

    def _finish_request(self, state: _Request, outcome: str, abort: bool) -> None:
        for choice in state.choices:
            if not choice.done:
                choice.done = True
                if abort and choice.seq.status in (SeqStatus.WAITING, SeqStatus.RUNNING):
                    self.scheduler.abort(choice.seq)
                self._release_choice(choice)
        state.finished = True
        self._metrics.requests.labels(self.name, outcome).inc()

    def _fail_all(self, exc: Exception) -> None:
        self.ctx.clear()
        if self.drafts is not None:
            self.drafts.clear()
        self.scheduler.reset()
        self.admission.forget_prompts()
        error = EngineUnavailable(f"the engine failed while decoding ({exc}) and was reset; please retry",
                                  code="engine_restarted")
        for state in {id(s): s for s in self._live.values()}.values():
            self._finish_request(state, outcome="failed", abort=False)
            state.send(error)
        self._live.clear()

    def _record(self, computed: int, sampled: int) -> None:
        self._waiting = len(self.scheduler.waiting)
        tokens, waiting, online_running = online_backlog(self.scheduler)
        self.admission.report(tokens, waiting, free_slots=self.config.max_seqs - online_running)
        self._recorder.record(self.scheduler, self.tiers, computed, sampled, self.prefixes)

    def close(self) -> None:
        """Stop the loop thread, fail what is still live, and free native memory."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        for state in {id(s): s for s in self._live.values()}.values():
            state.send(EngineUnavailable("the engine was shut down"))
        self.runner.close()
        if self.drafts is not None:
            self.drafts.close()
        self.ctx.close()
