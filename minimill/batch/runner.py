"""Running batches: validate the input file, group lines by shared prefix, run them at batch priority,
record each line with its bill, and write the output and error files.

One task per server runs the unfinished batches in creation order (after a restart too: a batch
resumes from the lines the store already has). The API layer supplies a `LineExecutor`, which
validates and runs a line exactly as the online endpoint would; this module never sees HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from minimill.batch.files import FileStore
from minimill.batch.grouping import Group, GroupedLine, group_lines
from minimill.batch.jsonl import InputLine, LineProblem, parse_input
from minimill.batch.store import BatchRecord, BatchStore
from minimill.billing.meter import Meter
from minimill.config import BatchLimits
from minimill.engine.client import EngineClient
from minimill.engine.types import GenerationRequest, NamedKV, SamplingParams, Usage
from minimill.errors import CapacityExceeded, EngineUnavailable, LedgerUnavailable, MinimillError, NotFound

log = logging.getLogger(__name__)
RETRY_SECONDS = 0.5
# A batch's lease: renewed every third of it while it runs, taken over by another runner once it lapses.
LEASE_SECONDS = 30.0
CANCEL_POLL_SECONDS = 2.0  # how soon a cancel sent through another server stops the lines running here
# Lines a runner claims at once (a part: neighbours in the grouped order, so a part shares its group's prefix).
PART_LINES = 64
# the executor's own handle on what a line runs (serving's Call); this module only carries it
CallT = TypeVar("CallT")


@dataclass(frozen=True, slots=True)
class PreparedLine(Generic[CallT]):
    """A line's request as the executor validated it: the model, its prompts' token ids, and the
    executor's own handle on what to run."""

    model: str
    prompts: tuple[tuple[int, ...], ...]
    call: CallT


@dataclass(frozen=True, slots=True)
class LineResult:
    """What running a line gave: the HTTP status and body the online endpoint would have answered,
    the usage to bill, and how many prompt tokens to bill as cached (None: as the engine counted)."""

    status_code: int
    body: dict[str, Any]
    request_id: str
    usage: Usage | None = None
    billed_cached: int | None = None


class LineExecutor(Protocol[CallT]):
    """Validates and runs one line as the online endpoint does (implemented by the API layer)."""

    def prepare(self, tenant: str, endpoint: str, body: dict[str, Any]) -> PreparedLine[CallT]:
        """Validate and tokenize; raises MinimillError for a request the endpoint would refuse."""

    async def execute(self, tenant: str, line: PreparedLine[CallT], request_id: str,
                      reuse: NamedKV | None) -> LineResult:
        """Run it at batch priority, reusing `reuse`'s KV for its prefix; the usage is not billed here."""

    def error(self, exc: MinimillError) -> tuple[int, dict[str, Any]]:
        """The HTTP status and OpenAI error body of a refused request."""


_Prepared = tuple[InputLine, PreparedLine[CallT] | None]


@dataclass(slots=True, eq=False)
class _GroupRun:
    """A group being run: its prefix's pinned KV (once prefilled) and the lines still to finish."""

    model: str
    prefix: tuple[int, ...]
    remaining: int
    ready: asyncio.Task[NamedKV] | None = None


@dataclass(slots=True)
class _Active:
    """A batch being run (keyed by its id in `BatchRunner._active`) and its workers (cancel stops them)."""

    workers: list[asyncio.Task[None]] = field(default_factory=list)
    cancelled: bool = False
    lost: bool = False  # its lease passed to another runner (this one hung past it)


@dataclass(slots=True)
class _Plan(Generic[CallT]):
    """A batch's runnable lines grouped by shared prefix and cut into parts (the same for every runner: grouping
    is deterministic), with this runner's state of each group."""

    runnable: dict[int, tuple[InputLine, PreparedLine[CallT]]]
    runs: list[_GroupRun]
    parts: list[list[tuple[int, int]]]  # part -> (line number, group index)


def cut_parts(groups: Sequence[Group], size: int) -> list[list[tuple[int, int]]]:
    """The grouped lines in order, cut every `size` lines: a big group spans several parts, small neighbours
    share one."""
    ordered = [(number, index) for index, group in enumerate(groups) for number in group.lines]
    return [ordered[start:start + size] for start in range(0, len(ordered), size)]


def error_line(line: int, custom_id: str | None, problem: LineProblem, status: int | None = None,
               body: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error-file line: OpenAI's shape, with the input line's number in `error.line`."""
    response = None if status is None else {"status_code": status, "request_id": None, "body": body}
    return {"id": f"batch_req_{secrets.token_hex(12)}", "custom_id": custom_id, "response": response,
            "error": {"code": problem.code, "message": problem.message, "param": problem.param, "line": line}}


class BatchRunner(Generic[CallT]):
    """Runs every unfinished batch: each tenant's one after another, different tenants' side by side (the
    engine's fair scheduler then interleaves their lines); `wake` after creating or cancelling one."""

    def __init__(self, store: BatchStore, files: FileStore, executor: LineExecutor[CallT], meter: Meter,
                 engines: Mapping[str, EngineClient], limits: BatchLimits, runner_id: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.files = files
        self.executor = executor
        self.meter = meter
        self.engines = engines
        self.limits = limits
        self._now = clock
        self._wake = asyncio.Event()
        self._active: dict[str, _Active] = {}  # batch id -> the batch being run and its workers
        self._helped: dict[str, _Plan[CallT]] = {}  # the plan of the batch this runner last helped with
        # Its name on the leases of the batches it runs (servers sharing a ledger take turns, never both).
        self.runner_id = runner_id or f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(4)}"

    def wake(self) -> None:
        """Look for work now."""
        self._wake.set()

    def cancel(self, batch_id: str) -> None:
        """Stop a batch that the store marked cancelling: no new lines; lines in flight are aborted."""
        active = self._active.get(batch_id)
        if active is not None:
            active.cancelled = True
            for worker in active.workers:
                worker.cancel()
        self.wake()

    async def run(self) -> None:
        """Forever: for each tenant, take its oldest unfinished batch and carry it as far as it goes."""
        running: dict[str, asyncio.Task[None]] = {}  # tenant -> the task processing its current batch
        try:
            while True:
                try:
                    for record in await asyncio.to_thread(self.store.unfinished):  # oldest first
                        if record.tenant not in running:
                            running[record.tenant] = asyncio.create_task(self._guarded(record))
                except LedgerUnavailable:
                    log.warning("batch runner: the ledger database is unavailable; retrying")
                except Exception:  # the runner itself must not stop; it looks again on the next pass
                    log.exception("batch runner: unexpected error")
                with contextlib.suppress(TimeoutError):  # a pass a second at most, as a failing ledger needs
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                self._wake.clear()
                for tenant in [t for t, task in running.items() if task.done()]:
                    del running[tenant]
        finally:
            for task in running.values():
                task.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)

    async def _guarded(self, record: BatchRecord) -> None:
        """`_process` under the batch's lease (another runner sharing the ledger may hold it: then nothing), with
        what fails logged: one bad batch is retried on a later pass, never fatal."""
        try:
            if not await asyncio.to_thread(self.store.claim, record.id, self.runner_id, self._now(), LEASE_SECONDS):
                if record.status == "in_progress":  # another runner owns it: take parts of its lines beside it
                    await self._help(record)
                return
            keeper = asyncio.create_task(self._keep_lease(record.id, owner=True))
            try:
                await self._process(record)
            finally:
                keeper.cancel()
                await asyncio.to_thread(self.store.release, record.id, self.runner_id)
        except LedgerUnavailable:
            log.warning("batch runner: the ledger database is unavailable; batch %s is retried", record.id)
        except Exception:
            log.exception("batch runner: unexpected error in batch %s", record.id)

    async def _keep_lease(self, batch_id: str, owner: bool) -> None:
        """Renew the leases (the batch's, for its owner, and the parts held) while the batch runs; stop its lines
        if the batch's lease was lost or the batch was cancelled through another server sharing the ledger."""
        renewed = self._now()
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            try:
                if self._now() - renewed >= LEASE_SECONDS / 3:
                    await asyncio.to_thread(self.store.renew_parts, batch_id, self.runner_id, self._now(),
                                            LEASE_SECONDS)
                    if owner and not await asyncio.to_thread(self.store.claim, batch_id, self.runner_id,
                                                             self._now(), LEASE_SECONDS):
                        log.warning("batch %s: its lease passed to another runner; stopping here", batch_id)
                        if (active := self._active.get(batch_id)) is not None:
                            active.lost = True
                        self.cancel(batch_id)
                        return
                    renewed = self._now()
                if (await asyncio.to_thread(self.store.get, batch_id)).status == "cancelling":
                    self.cancel(batch_id)
            except LedgerUnavailable:
                continue

    async def _process(self, record: BatchRecord) -> None:
        record = await asyncio.to_thread(self.store.get, record.id)  # it may have changed while it queued
        prepared = None
        if record.status == "validating":
            record, prepared = await asyncio.to_thread(self._validate, record)
        if record.status == "in_progress" and record.expires_at > self._now():
            self._active[record.id] = active = _Active()
            try:
                plan = await asyncio.to_thread(self._plan, record, prepared)
                # Other runners may hold parts: wait for them (or for their leases to lapse, then take the parts).
                while await self._run_parts(record, plan) and not active.cancelled and not active.lost:
                    await asyncio.sleep(CANCEL_POLL_SECONDS)
                    record = await asyncio.to_thread(self.store.get, record.id)
                    if record.status != "in_progress" or record.expires_at <= self._now():
                        break
            finally:
                del self._active[record.id]
            if active.lost:  # the runner that took the lease over finishes it
                return
            record = await asyncio.to_thread(self.store.get, record.id)
        if record.status in ("in_progress", "finalizing", "cancelling"):
            await asyncio.to_thread(self._finalize, record)

    async def _help(self, record: BatchRecord) -> None:
        """Run parts of a batch another runner owns (it validates and finalizes), while any is left to take."""
        if record.expires_at <= self._now() or record.id in self._active:
            return
        self._active[record.id] = _Active()
        keeper = asyncio.create_task(self._keep_lease(record.id, owner=False))
        try:
            plan = self._helped.get(record.id)
            if plan is None:
                plan = await asyncio.to_thread(self._plan, record, None)
                self._helped = {record.id: plan}  # one at a time: a plan holds every line's tokens
            if not await self._run_parts(record, plan):
                self._helped.pop(record.id, None)
        finally:
            keeper.cancel()
            del self._active[record.id]

    # ---- validation -----------------------------------------------------------------------------
    def _read(self, record: BatchRecord) -> tuple[list[InputLine], dict[str, Any] | None]:
        try:
            raw = self.files.content(record.tenant, record.input_file_id)
        except NotFound:
            return [], {"code": "invalid_file", "message": f"input file {record.input_file_id} no longer exists",
                        "param": "input_file_id", "line": None}
        lines, problem = parse_input(raw, record.endpoint, self.limits.max_batch_lines)
        return lines, problem.as_dict() if problem is not None else None

    def _validate(self, record: BatchRecord) -> tuple[BatchRecord, list[_Prepared[CallT]] | None]:
        """Whole-file problems fail the batch; each bad line gets its error row; then in_progress.
        Returns the lines as prepared, so that running them does not tokenize them again."""
        lines, problem = self._read(record)
        if problem is not None:
            self.store.move(record.id, "failed", errors=[problem])
            return self.store.get(record.id), None
        prepared = [(line, self._prepare(record, line)) for line in lines]  # writes the bad lines' error rows
        self.store.move(record.id, "in_progress", only_from=("validating",), total=len(lines))
        return self.store.get(record.id), prepared

    def _prepare(self, record: BatchRecord, line: InputLine) -> PreparedLine[CallT] | None:
        """The line validated as the endpoint would; None (and its error row written) if it cannot run."""
        if line.problem is not None:
            self.store.finish_line(record.id, line.number, line.custom_id, False,
                                   error_line(line.number, line.custom_id, line.problem))
            return None
        assert line.body is not None
        try:
            return self.executor.prepare(record.tenant, record.endpoint, line.body)
        except MinimillError as exc:
            status, body = self.executor.error(exc)
            problem = LineProblem(exc.code or "invalid_request", f"line {line.number}: {exc.message}", exc.param)
            self.store.finish_line(record.id, line.number, line.custom_id, False,
                                   error_line(line.number, line.custom_id, problem, status, body))
            return None
        except Exception as exc:  # a bug must cost one line (a 500 in the error file), not leave the batch
            # `validating` forever: _validate would raise on every pass and block the batches behind it
            log.exception("batch %s: line %d could not be prepared", record.id, line.number)
            self._failed(record, line, exc)
            return None

    # ---- running --------------------------------------------------------------------------------
    def _plan(self, record: BatchRecord, prepared: list[_Prepared[CallT]] | None) -> _Plan[CallT]:
        """Every runnable line of the batch (as validation prepared them, or read and prepared again), grouped by
        shared prefix and cut into parts. Cut from all lines, not those left, so every runner cuts the same."""
        if prepared is None:  # resumed after a restart, or helping another runner
            lines, _ = self._read(record)
            prepared = [(line, self._prepare(record, line)) for line in lines]  # bad lines' rows exist: no-ops
        runnable = {line.number: (line, p) for line, p in prepared if p is not None}
        groups = group_lines([GroupedLine(n, p.model, p.prompts[0] if len(p.prompts) == 1 else ())
                              for n, (_, p) in runnable.items()], self.limits.min_group_prefix)
        return _Plan(runnable, [_GroupRun(group.model, group.prefix, remaining=0) for group in groups],
                     cut_parts(groups, PART_LINES))

    async def _run_parts(self, record: BatchRecord, plan: _Plan[CallT]) -> bool:
        """Run the lines without a row yet, `concurrency` at a time, taking one part after another as long as
        some part with lines left is free; each group's prefix is computed once for the parts taken here.
        Returns whether lines are left (in parts other runners hold)."""
        active = self._active[record.id]
        queue: deque[tuple[int, _GroupRun]] = deque()
        taking = asyncio.Lock()
        queued: set[int] = set()  # lines this pass has queued (done, running or waiting here)
        left = True

        async def take() -> bool:
            """Claim the next free part with lines left and queue them; False when there is none."""
            nonlocal left
            done = await asyncio.to_thread(self.store.done_lines, record.id)
            held = await asyncio.to_thread(self.store.held_parts, record.id, self.runner_id, self._now())
            waiting = [i for i, part in enumerate(plan.parts) if any(n not in done for n, _ in part)]
            left = bool(waiting)
            for index in (i for i in waiting if i not in held):
                fresh = [(n, group) for n, group in plan.parts[index] if n not in done and n not in queued]
                if not fresh or not await asyncio.to_thread(self.store.claim_part, record.id, index, self.runner_id,
                                                            self._now(), LEASE_SECONDS):
                    continue
                for number, group in fresh:
                    queued.add(number)
                    plan.runs[group].remaining += 1
                    queue.append((number, plan.runs[group]))
                return True
            return False

        async def worker() -> None:
            while not active.cancelled and record.expires_at > self._now():
                if not queue:
                    async with taking:
                        if not queue and not await take():
                            return
                    continue
                number, run = queue.popleft()
                line, line_prepared = plan.runnable[number]
                try:
                    reuse = await self._group_prefix(record, run) if run.prefix else None
                    await self._run_line(record, line, line_prepared, reuse)
                except Exception as exc:  # a bug must cost one line (a 500 in the error file), not the batch
                    log.exception("batch %s: line %d failed", record.id, number)
                    await asyncio.to_thread(self._failed, record, line, exc)
                finally:
                    run.remaining -= 1
                    if run.remaining == 0:
                        self._release(run)

        # A few more workers than batch slots, so a line is always waiting when one finishes.
        concurrency = max((engine.batch_slots for engine in self.engines.values()), default=1) + 2
        active.workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(plan.runnable)))]
        try:
            await asyncio.gather(*active.workers, return_exceptions=True)
        finally:
            for run in plan.runs:
                self._release(run)
                run.remaining = 0
            await asyncio.to_thread(self.store.release_parts, record.id, self.runner_id)
        if left:  # what this pass saw may be stale: look once more
            done = await asyncio.to_thread(self.store.done_lines, record.id)
            left = any(n not in done for n in plan.runnable)
        return left

    def _release(self, run: _GroupRun) -> None:
        """Unpin a group's prefix (or stop its prefill) once its lines are done or the batch stops."""
        if run.ready is None:
            return
        if not run.ready.done():
            run.ready.cancel()
        elif not run.ready.cancelled() and run.ready.exception() is None and (named := run.ready.result()):
            self.engines[run.model].forget(named.name)
        run.ready = None

    def _failed(self, record: BatchRecord, line: InputLine, exc: Exception) -> None:
        problem = LineProblem("server_error", f"line {line.number}: the server had an error ({type(exc).__name__})")
        body = {"error": {"message": problem.message, "type": "server_error", "param": None, "code": None}}
        self.store.finish_line(record.id, line.number, line.custom_id, False,
                               error_line(line.number, line.custom_id, problem, 500, body))

    async def _group_prefix(self, record: BatchRecord, run: _GroupRun) -> NamedKV:
        """The group's prefix, prefilled once (by the first of its lines to start) and pinned."""
        if run.ready is None:
            run.ready = asyncio.ensure_future(self._prefill(record, run))
        return await asyncio.shield(run.ready)

    async def _prefill(self, record: BatchRecord, run: _GroupRun) -> NamedKV:
        """Compute a group's shared prefix and pin its KV for the batch's lifetime; billed as batch input."""
        tag = secrets.token_hex(6)
        named = NamedKV(f"batch:{record.id}:{tag}", record.tenant, record.expires_at, tokens=run.prefix)
        request = GenerationRequest(request_id=f"{record.id}-prefix-{tag}", prompt_tokens=run.prefix,
                                    params=SamplingParams(max_tokens=1, temperature=0.0), tenant=record.tenant,
                                    keep=named, priority="batch")
        usage = await self._retrying(lambda: self.engines[run.model].run_to_end(request))
        entry = self.meter.bill(request_id=f"{record.id}:prefix:{tag}", tenant=record.tenant, model=run.model,
                                kind="batch.prefix", usage=Usage(usage.prompt_tokens, 0, usage.cached_tokens),
                                batch=True)
        await self._retrying(lambda: asyncio.to_thread(self.meter.ledger.record, entry))
        return named

    async def _retrying(self, attempt: Callable[[], Any]) -> Any:
        """Run `attempt` until it does not fail for a passing reason (queue full, engine restarting,
        ledger down); batch lines are never lost to those, they wait."""
        while True:
            try:
                return await attempt()
            except (CapacityExceeded, EngineUnavailable, LedgerUnavailable) as exc:
                log.debug("batch: retrying after %s", type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)

    async def _run_line(self, record: BatchRecord, line: InputLine, prepared: PreparedLine[CallT],
                        reuse: NamedKV | None) -> None:
        request_id = f"{record.id}-{line.number}"

        async def attempt() -> LineResult:
            result = await self.executor.execute(record.tenant, prepared, request_id, reuse)
            if result.status_code in (429, 503):
                raise EngineUnavailable("transient")  # run it again: a passing condition, not the line's fault
            return result

        result: LineResult = await self._retrying(attempt)
        if result.status_code != 200 or result.usage is None:
            error = result.body.get("error", {})
            problem = LineProblem(error.get("code") or "request_failed",
                                  f"line {line.number}: {error.get('message', 'failed')}", error.get("param"))
            payload = error_line(line.number, line.custom_id, problem, result.status_code, result.body)
            await self._retrying(lambda: asyncio.to_thread(self.store.finish_line, record.id, line.number,
                                                           line.custom_id, False, payload))
            return
        entry = self.meter.bill(request_id=f"{record.id}:{line.number}", tenant=record.tenant, model=prepared.model,
                                kind=f"batch.{result.body.get('object', 'line')}", usage=result.usage,
                                billed_cached=result.billed_cached, batch=True)
        result.body["usage"]["cost"] = entry.cost.as_dict()
        payload = {"id": f"batch_req_{secrets.token_hex(12)}", "custom_id": line.custom_id,
                   "response": {"status_code": 200, "request_id": result.request_id, "body": result.body},
                   "error": None}
        await self._retrying(lambda: asyncio.to_thread(self.store.finish_line, record.id, line.number,
                                                       line.custom_id, True, payload, entry))

    # ---- finishing ------------------------------------------------------------------------------
    def _finalize(self, record: BatchRecord) -> None:
        """Lines left over (cancelled or expired) get error rows; the output and error files are written."""
        expired = record.status != "cancelling" and record.expires_at <= self._now()
        lines, _ = self._read(record)
        done = self.store.done_lines(record.id)
        left = [line for line in lines if line.number not in done]
        if record.status == "in_progress" and left and not expired:
            return  # interrupted (the server is stopping): resumed on the next pass
        final = "cancelled" if record.status == "cancelling" else "expired" if expired else "completed"
        code, why = {"cancelled": ("batch_cancelled", "the batch was cancelled before this request ran"),
                     "expired": ("batch_expired", "the batch expired before this request ran")}.get(final, ("", ""))
        for line in left:
            self.store.finish_line(record.id, line.number, line.custom_id, False,
                                   error_line(line.number, line.custom_id, LineProblem(code, why)))
        if final == "completed":
            self.store.move(record.id, "finalizing", only_from=("in_progress", "finalizing"))
        outputs = {}
        for ok, kind in ((True, "output"), (False, "error")):
            rows = self.store.results(record.id, ok)
            if rows:
                data = ("\n".join(rows) + "\n").encode()
                outputs[f"{kind}_file_id"] = self.files.put(record.tenant, "batch_output",
                                                            f"{record.id}_{kind}.jsonl", data,
                                                            file_id=f"file-{record.id}-{kind}").id
        self.store.move(record.id, final, only_from=("in_progress", "finalizing", "cancelling"),  # type: ignore[arg-type]
                        total=max(record.total, len(lines)), **outputs)
